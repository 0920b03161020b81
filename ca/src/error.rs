//! Errors as Fabric CA reports them: an HTTP status plus a Fabric CA error code and message,
//! sent in cfssl's response envelope (`{"success":false,"errors":[{"code":..,"message":..}]}`).

/// Fabric CA's error codes (lib/caerrors), the ones this server produces.
pub mod code {
    pub const UNKNOWN: u32 = 0;
    pub const METHOD_NOT_ALLOWED: u32 = 1;
    pub const NO_AUTH_HEADER: u32 = 2;
    pub const READING_BODY: u32 = 3;
    pub const EMPTY_BODY: u32 = 4;
    pub const BAD_BODY: u32 = 5;
    pub const BAD_TOKEN: u32 = 6;
    pub const NOT_REVOKER: u32 = 7;
    pub const REVOKE_CERT_NOT_FOUND: u32 = 8;
    pub const CERT_WRONG_OWNER: u32 = 9;
    pub const REVOKE_ID_NOT_FOUND: u32 = 10;
    pub const MISSING_REVOKE_ARGS: u32 = 15;
    pub const GETTING_AFFILIATION: u32 = 16;
    pub const CA_NOT_FOUND: u32 = 19;
    pub const AUTHENTICATION_FAILURE: u32 = 20;
    pub const NO_USER_PASS: u32 = 21;
    pub const INVALID_TOKEN: u32 = 25;
    pub const UNTRUSTED_CERT: u32 = 26;
    pub const CERT_EXPIRED: u32 = 27;
    pub const CERT_REVOKED: u32 = 28;
    pub const BAD_CSR: u32 = 31;
    pub const NO_GENCRL_AUTH: u32 = 35;
    pub const GEN_CRL: u32 = 41;
    pub const REG_ATTR_AUTH: u32 = 42;
    pub const MISSING_REG_ATTR: u32 = 43;
    pub const CALLER_NOT_AFFILIATED: u32 = 44;
    pub const GETTING_USER: u32 = 49;
    pub const ADD_IDENTITY: u32 = 52;
    pub const REGISTRAR_INVALID_TYPE: u32 = 54;
    pub const REGISTRAR_NOT_AFFILIATED: u32 = 55;
    pub const REMOVE_IDENTITY: u32 = 56;
    pub const MODIFYING_IDENTITY: u32 = 58;
    pub const MISSING_ROLE: u32 = 59;
    pub const UPDATE_CONFIG_ADD_AFF: u32 = 60;
    pub const UPDATE_CONFIG_REMOVE_AFF: u32 = 61;
    pub const DB_GET: u32 = 63;
    pub const UPDATE_CONFIG_MODIFY_AFF: u32 = 64;
    pub const CERT_ALREADY_REVOKED: u32 = 66;
    pub const GETTING_CERT: u32 = 67;
    pub const REVOKED_ID: u32 = 70;
    pub const AUTHORIZATION_FAILURE: u32 = 71;
    pub const DUP_IDENTITY_REG: u32 = 74;
    pub const INVOKER_MISS_ATTR: u32 = 78;
    pub const INVALID_BOOL: u32 = 79;
}

/// A request the CA refused or could not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (HTTP {status}, code {code})")]
pub struct CaError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl CaError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn unauthorized(code: u32, message: impl Into<String>) -> Self {
        Self::new(401, code, message)
    }

    pub fn forbidden(code: u32, message: impl Into<String>) -> Self {
        Self::new(403, code, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, code::UNKNOWN, format!("internal error: {message}"))
    }

    /// The cfssl/Fabric CA error envelope.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "success": false,
            "result": null,
            "errors": [{"code": self.code, "message": self.message}],
            "messages": [],
        })
    }
}
