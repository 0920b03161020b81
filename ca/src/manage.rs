//! Fabric CA's management API, as rules without HTTP: identities (`/identities`), affiliations
//! (`/affiliations`) and issued certificates (`/certificates`), with Fabric CA's authorization
//! (registrar roles, affiliation scope, hf.Registrar.Attributes, hf.AffiliationMgr).

use std::collections::BTreeMap;

use medledger_common::msp::unix_now;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::attrs;
use crate::authority::{
    Authority, Caller, RegisterRequest, affiliation_covers, bool_attr, hash_secret, registrar_roles,
};
use crate::error::{CaError, code};
use crate::store::{Attribute, CertRecord, Changes, IdentityRecord};

/// `max_enrollments` in a modify request that sets the identity back to the CA's default.
const RESET_MAX_ENROLLMENTS: i32 = -2;
/// Revocation reasons Fabric CA records when it removes identities.
const REASON_CESSATION: &str = "cessationofoperation";
const REASON_AFFILIATION_CHANGE: &str = "affiliationchange";
const SECS_PER_DAY: i64 = 24 * 3600;

/// Reads `null` as the type's default: Fabric's clients send `null` for fields they leave unset.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The body of `PUT identities/{id}` (Fabric CA's `ModifyIdentityRequest`): empty fields are
/// left as they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ModifyIdentityRequest {
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub affiliation: String,
    #[serde(default, deserialize_with = "nullable")]
    pub attrs: Vec<Attribute>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_enrollments: i32,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub secret: String,
}

/// The body of `POST affiliations` and `PUT affiliations/{name}` (the new name).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AffiliationRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
}

/// Fabric CA's certificate filters (`GET certificates?id=..&serial=..`), times in Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFilter {
    pub id: String,
    pub serial: String,
    pub aki: String,
    pub not_expired: bool,
    pub not_revoked: bool,
    pub revoked_start: Option<i64>,
    pub revoked_end: Option<i64>,
    pub expired_start: Option<i64>,
    pub expired_end: Option<i64>,
}

/// A `force`-like query parameter read as Fabric CA's `GetBoolQueryParm` (lowercased
/// `strconv.ParseBool`); absent is false.
pub fn bool_query(
    query: &BTreeMap<String, String>,
    name: &str,
    err_code: u32,
) -> Result<bool, CaError> {
    match query.get(name).filter(|v| !v.is_empty()) {
        None => Ok(false),
        Some(v) => attrs::parse_bool(&v.to_lowercase()).ok_or_else(|| {
            CaError::bad_request(
                err_code,
                format!("Failed to correctly parse value of '{name}' query parameter: {v:?} is not a boolean"),
            )
        }),
    }
}

impl CertificateFilter {
    /// The filters from a query string's parameters, checked as Fabric CA's
    /// `NewCertificateRequest` does.
    pub fn from_query(query: &BTreeMap<String, String>) -> Result<Self, CaError> {
        let invalid =
            |e: String| CaError::bad_request(code::GETTING_CERT, format!("Invalid Request: {e}"));
        let now = unix_now();
        let time = |param: &str, label: &str| -> Result<Option<i64>, CaError> {
            match query.get(param).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => parse_time(v, now)
                    .map(Some)
                    .map_err(|e| invalid(format!("Invalid '{label}' value: {e}"))),
            }
        };
        let f = Self {
            id: query.get("id").cloned().unwrap_or_default(),
            serial: query.get("serial").cloned().unwrap_or_default(),
            aki: query.get("aki").cloned().unwrap_or_default(),
            revoked_start: time("revoked_start", "revoked_begin")?,
            revoked_end: time("revoked_end", "revoked_end")?,
            expired_start: time("expired_start", "expired_begin")?,
            expired_end: time("expired_end", "expired_end")?,
            not_revoked: bool_query(query, "notrevoked", code::UPDATE_CONFIG_REMOVE_AFF)
                .map_err(|e| invalid(e.message))?,
            not_expired: bool_query(query, "notexpired", code::UPDATE_CONFIG_REMOVE_AFF)
                .map_err(|e| invalid(e.message))?,
        };
        if f.not_expired && (f.expired_start.is_some() || f.expired_end.is_some()) {
            return Err(invalid(
                "Can't specify expiration time filter and the 'notexpired' filter".into(),
            ));
        }
        if f.not_revoked && (f.revoked_start.is_some() || f.revoked_end.is_some()) {
            return Err(invalid(
                "Can't specify revocation time filter and the 'notrevoked' filter".into(),
            ));
        }
        Ok(f)
    }

    fn matches(&self, c: &CertRecord, now: i64) -> bool {
        let norm = |s: &str| s.to_lowercase().trim_start_matches('0').replace(':', "");
        if !self.id.is_empty() && c.id != self.id {
            return false;
        }
        if !self.serial.is_empty() && norm(&c.serial) != norm(&self.serial) {
            return false;
        }
        if !self.aki.is_empty() && norm(&c.aki) != norm(&self.aki) {
            return false;
        }
        if self.not_expired {
            if c.not_after < now {
                return false;
            }
        } else if self.expired_start.is_some_and(|t| c.not_after < t)
            || self.expired_end.is_some_and(|t| c.not_after > t)
        {
            return false;
        }
        if self.not_revoked {
            if c.revoked_at.is_some() {
                return false;
            }
        } else if self.revoked_start.is_some() || self.revoked_end.is_some() {
            let Some(at) = c.revoked_at else {
                return false;
            };
            if self.revoked_start.is_some_and(|t| at < t)
                || self.revoked_end.is_some_and(|t| at > t)
            {
                return false;
            }
        }
        true
    }
}

/// A time as Fabric CA's certificate filters take it: RFC 3339, a date (midnight UTC), or a
/// duration from now (`-30d`, `+2h30m`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    if let Some(sign) = text.chars().next().filter(|c| *c == '+' || *c == '-') {
        let lower = text.to_lowercase();
        if lower.ends_with('y') {
            return Err(format!(
                "Invalid time format, year (y) is not supported, please check: {text}"
            ));
        }
        let secs = if lower.ends_with('d') {
            // As Fabric CA: the first number, in days.
            let digits: String = lower[1..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            let days: i64 = digits.parse().map_err(|_| {
                format!("Invalid time format, integer values required for duration, please check: {text}")
            })?;
            days.checked_mul(SECS_PER_DAY).ok_or("duration too large")?
        } else {
            parse_duration_secs(&lower[1..])
                .ok_or_else(|| format!("Failed to parse duration: {text}"))?
        };
        return Ok(if sign == '-' { now - secs } else { now + secs });
    }
    let full = if text.contains('T') {
        text.to_owned()
    } else {
        format!("{text}T00:00:00Z")
    };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("Failed to parse time based on RFC3339: {e}"))
}

/// Go's `time.ParseDuration` for whole seconds (`1h30m`, `90s`, `1.5h`), without a sign.
fn parse_duration_secs(text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    (total.is_finite() && total < i64::MAX as f64).then_some(total as i64)
}

/// Fabric CA's `IdentityInfo` / `GetIDResponse`.
fn identity_info(rec: &IdentityRecord) -> Value {
    json!({
        "id": rec.id,
        "type": rec.kind,
        "affiliation": rec.affiliation,
        "attrs": rec.attrs,
        "max_enrollments": rec.max_enrollments,
    })
}

/// Fabric CA's `IdentityResponse` (type, attrs, max_enrollments and secret omitted when empty).
fn identity_response(rec: &IdentityRecord, secret: &str, caname: &str) -> Value {
    let mut v = json!({ "id": rec.id, "affiliation": rec.affiliation, "caname": caname });
    if !rec.kind.is_empty() {
        v["type"] = json!(rec.kind);
    }
    if !rec.attrs.is_empty() {
        v["attrs"] = json!(rec.attrs);
    }
    if rec.max_enrollments != 0 {
        v["max_enrollments"] = json!(rec.max_enrollments);
    }
    if !secret.is_empty() {
        v["secret"] = json!(secret);
    }
    v
}

fn in_subtree(root: &str, name: &str) -> bool {
    name == root || name.starts_with(&format!("{root}."))
}

/// `fillAffiliationInfo`: `name` with the identities directly in it and its sub-affiliations.
fn affiliation_tree(name: &str, affiliations: &[String], identities: &[IdentityRecord]) -> Value {
    let mut v = json!({ "name": name });
    let ids: Vec<Value> = identities
        .iter()
        .filter(|i| i.affiliation == name)
        .map(identity_info)
        .collect();
    if !ids.is_empty() {
        v["identities"] = json!(ids);
    }
    let children: Vec<Value> = affiliations
        .iter()
        .filter(|a| {
            a.strip_prefix(name)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|r| !r.contains('.'))
        })
        .map(|child| affiliation_tree(child, affiliations, identities))
        .collect();
    if !children.is_empty() {
        v["affiliations"] = json!(children);
    }
    v
}

fn user_not_found(id: &str) -> CaError {
    CaError::new(
        404,
        code::DB_GET,
        format!("Failed to get User: identity '{id}' does not exist"),
    )
}

fn affiliation_not_found(name: &str) -> CaError {
    CaError::new(
        404,
        code::DB_GET,
        format!("Failed to get affiliation: '{name}' does not exist"),
    )
}

impl Authority {
    /// `GetUser` for the management API: the identity, if the caller may manage it.
    fn managed_identity(
        &self,
        caller: &IdentityRecord,
        id: &str,
    ) -> Result<IdentityRecord, CaError> {
        let rec = self.store.identity(id)?.ok_or_else(|| user_not_found(id))?;
        Self::can_manage(caller, &rec)?;
        Ok(rec)
    }

    /// `GET identities`: every identity the registrar may act on (affiliation and type).
    pub fn identities(&self, caller: &Caller) -> Result<Value, CaError> {
        let roles = registrar_roles(&caller.identity)
            .ok_or_else(|| CaError::forbidden(code::GETTING_USER, "Caller is not a registrar"))?;
        let wildcard = attrs::list(roles).iter().any(|r| r == "*");
        let list: Vec<Value> = self
            .store
            .identities()?
            .iter()
            .filter(|r| {
                affiliation_covers(&caller.identity.affiliation, &r.affiliation)
                    && (wildcard || attrs::list(roles).iter().any(|t| t == &r.kind))
            })
            .map(identity_info)
            .collect();
        Ok(json!({ "identities": list, "caname": self.name() }))
    }

    /// `GET identities/{id}`.
    pub fn identity(&self, caller: &Caller, id: &str) -> Result<Value, CaError> {
        let rec = self.managed_identity(&caller.identity, id)?;
        let mut v = identity_info(&rec);
        v["caname"] = json!(self.name());
        Ok(v)
    }

    /// `POST identities`: registers an identity as `register` does; answers with it and its
    /// secret.
    pub fn add_identity(&self, caller: &Caller, req: &RegisterRequest) -> Result<Value, CaError> {
        if req.id.is_empty() {
            return Err(CaError::bad_request(
                code::ADD_IDENTITY,
                "Missing 'ID' in request to add a new identity",
            ));
        }
        let (rec, secret) = self
            .new_identity(&caller.identity, req)
            .map_err(|e| CaError {
                message: format!("Failed to add identity '{}': {}", req.id, e.message),
                ..e
            })?;
        let mut changes = Changes::default();
        changes.use_token(&caller.token_hash, unix_now());
        self.insert_identity(rec.clone(), changes)?;
        Ok(identity_response(&rec, &secret, self.name()))
    }

    /// `PUT identities/{id}`: changes type, affiliation, attributes, max enrollments or secret.
    pub fn modify_identity(
        &self,
        caller: &Caller,
        id: &str,
        req: &ModifyIdentityRequest,
    ) -> Result<Value, CaError> {
        let who = &caller.identity;
        self.managed_identity(who, id)?;
        if !req.affiliation.is_empty()
            && req.affiliation != "."
            && !self.store.has_affiliation(&req.affiliation)?
        {
            return Err(CaError::bad_request(
                code::MODIFYING_IDENTITY,
                format!("Affiliation '{}' is not supported", req.affiliation),
            ));
        }
        // Hashed before the lock is taken: hashing takes tens of milliseconds.
        let new_hash = if req.secret.is_empty() {
            None
        } else {
            Some(hash_secret(&req.secret)?)
        };
        let _g = self.guard();
        let mut rec = self.managed_identity(who, id)?;
        if !req.affiliation.is_empty() {
            Self::contains_affiliation(who, &req.affiliation)?;
        }
        if !req.kind.is_empty() {
            Self::can_act_on_type(who, &req.kind)?;
        }
        attrs::can_register(&req.attrs, Some(&rec), who).map_err(|e| {
            CaError::forbidden(
                code::REG_ATTR_AUTH,
                format!("Failed to register attributes: {e}"),
            )
        })?;
        if let Some(h) = new_hash {
            rec.secret_hash = h;
        }
        if req.max_enrollments == RESET_MAX_ENROLLMENTS {
            rec.max_enrollments = 0;
        } else if req.max_enrollments != 0 {
            rec.max_enrollments = req.max_enrollments;
        }
        let mut changes_to_attrs = req.attrs.clone();
        let fixed = |name: &str, value: &str| Attribute {
            name: name.into(),
            value: value.into(),
            ecert: true,
        };
        match req.affiliation.as_str() {
            "" => {}
            "." => {
                rec.affiliation.clear();
                changes_to_attrs.push(fixed(attrs::AFFILIATION, ""));
            }
            a => {
                rec.affiliation = a.to_owned();
                changes_to_attrs.push(fixed(attrs::AFFILIATION, a));
            }
        }
        if !req.kind.is_empty() {
            rec.kind = req.kind.clone();
            changes_to_attrs.push(fixed(attrs::TYPE, &req.kind));
        }
        rec.attrs = attrs::merge(std::mem::take(&mut rec.attrs), &changes_to_attrs);
        let mut changes = Changes::default();
        changes.put_identity(&rec)?;
        changes.use_token(&caller.token_hash, unix_now());
        self.store.apply(changes)?;
        Ok(identity_response(&rec, &req.secret, self.name()))
    }

    /// `DELETE identities/{id}` (only with `cfg.identities.allowremove`): the identity goes and
    /// its certificates are revoked.
    pub fn remove_identity(
        &self,
        caller: &Caller,
        id: &str,
        force: bool,
    ) -> Result<Value, CaError> {
        if !self.config.identities_allow_remove {
            return Err(CaError::forbidden(
                code::REMOVE_IDENTITY,
                "Identity removal is disabled",
            ));
        }
        if id == caller.identity.id && !force {
            return Err(CaError::forbidden(
                code::REMOVE_IDENTITY,
                "Need to use 'force' option to delete your own identity",
            ));
        }
        let _g = self.guard();
        let rec = self.managed_identity(&caller.identity, id)?;
        let now = unix_now();
        let mut changes = Changes::default();
        self.revoke_all_of(
            std::slice::from_ref(&rec.id),
            REASON_CESSATION,
            now,
            &mut changes,
        )?;
        changes.delete_identity(&rec.id);
        changes.use_token(&caller.token_hash, now);
        self.store.apply(changes)?;
        Ok(identity_response(&rec, "", self.name()))
    }

    /// Revokes every unrevoked certificate of `ids` into `changes`.
    fn revoke_all_of(
        &self,
        ids: &[String],
        reason: &str,
        now: i64,
        changes: &mut Changes,
    ) -> Result<(), CaError> {
        for mut c in self.store.certs()? {
            if c.revoked_at.is_none() && ids.contains(&c.id) {
                c.revoked_at = Some(now);
                c.reason = Some(reason.to_owned());
                changes.put_cert(&c)?;
                self.count_revocations(1);
            }
        }
        Ok(())
    }

    /// `HasRole(hf.AffiliationMgr)`, needed for every affiliations request.
    fn check_affiliation_mgr(caller: &IdentityRecord) -> Result<(), CaError> {
        let value = caller.attr(attrs::AFFILIATION_MGR).ok_or_else(|| {
            CaError::forbidden(
                code::INVOKER_MISS_ATTR,
                format!(
                    "Invoker does not have following role'{}': '{}' has no such attribute",
                    attrs::AFFILIATION_MGR,
                    caller.id
                ),
            )
        })?;
        match attrs::parse_bool(value) {
            Some(true) => Ok(()),
            Some(false) => Err(CaError::forbidden(
                code::MISSING_ROLE,
                format!(
                    "Caller has a value of 'false' for attribute/role '{}'",
                    attrs::AFFILIATION_MGR
                ),
            )),
            None => Err(CaError::bad_request(
                code::INVALID_BOOL,
                format!(
                    "Failed to get boolean value of '{}': '{value}'",
                    attrs::AFFILIATION_MGR
                ),
            )),
        }
    }

    /// `GET affiliations`: the tree under the caller's affiliation.
    pub fn affiliations(&self, caller: &Caller) -> Result<Value, CaError> {
        Self::check_affiliation_mgr(&caller.identity)?;
        let mine = &caller.identity.affiliation;
        let all: Vec<String> = self
            .store
            .affiliations()?
            .into_iter()
            .filter(|a| mine.is_empty() || in_subtree(mine, a))
            .collect();
        let tops: Vec<&String> = all.iter().filter(|a| !a.contains('.')).collect();
        let mut v = match tops.as_slice() {
            [] if all.is_empty() => {
                return Err(CaError::new(
                    404,
                    code::GETTING_AFFILIATION,
                    "No affiliations are configured on the CA",
                ));
            }
            [one] => affiliation_tree(one, &all, &[]),
            _ if !mine.is_empty() => affiliation_tree(mine, &all, &[]),
            many => json!({
                "name": "",
                "affiliations": many.iter().map(|t| affiliation_tree(t, &all, &[])).collect::<Vec<_>>(),
            }),
        };
        v["caname"] = json!(self.name());
        Ok(v)
    }

    /// `GET affiliations/{name}`: the affiliation, its sub-affiliations and their identities.
    pub fn affiliation(&self, caller: &Caller, name: &str) -> Result<Value, CaError> {
        Self::check_affiliation_mgr(&caller.identity)?;
        Self::contains_affiliation(&caller.identity, name)?;
        if !self.store.has_affiliation(name)? {
            return Err(affiliation_not_found(name));
        }
        let affs: Vec<String> = self
            .store
            .affiliations()?
            .into_iter()
            .filter(|a| in_subtree(name, a))
            .collect();
        let ids: Vec<IdentityRecord> = self
            .store
            .identities()?
            .into_iter()
            .filter(|i| in_subtree(name, &i.affiliation))
            .collect();
        let mut v = affiliation_tree(name, &affs, &ids);
        v["caname"] = json!(self.name());
        Ok(v)
    }

    /// `POST affiliations`: adds one (with `force`, also the missing ones above it).
    pub fn add_affiliation(
        &self,
        caller: &Caller,
        name: &str,
        force: bool,
    ) -> Result<Value, CaError> {
        Self::check_affiliation_mgr(&caller.identity)?;
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(CaError::bad_request(
                code::UPDATE_CONFIG_ADD_AFF,
                format!("invalid affiliation name {name:?}"),
            ));
        }
        let _g = self.guard();
        if self.store.has_affiliation(name)? {
            return Err(CaError::new(
                409,
                code::UPDATE_CONFIG_ADD_AFF,
                "Affiliation already exists",
            ));
        }
        Self::contains_affiliation(&caller.identity, name)?;
        let mut changes = Changes::default();
        match name.rsplit_once('.') {
            Some((parent, _)) if !force && !self.store.has_affiliation(parent)? => {
                return Err(CaError::new(
                    404,
                    code::DB_GET,
                    format!(
                        "Failed to get affiliation: parent affiliation '{parent}' does not exist, 'force' option required on request to add affiliation"
                    ),
                ));
            }
            _ => {
                let mut path = String::new();
                for level in name.split('.') {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(level);
                    changes.put_affiliation(&path);
                }
            }
        }
        changes.use_token(&caller.token_hash, unix_now());
        self.store.apply(changes)?;
        Ok(json!({ "name": name, "caname": self.name() }))
    }

    /// `PUT affiliations/{name}`: renames an affiliation and everything under it (with `force`,
    /// also moving the identities in it).
    pub fn modify_affiliation(
        &self,
        caller: &Caller,
        name: &str,
        new_name: &str,
        force: bool,
    ) -> Result<Value, CaError> {
        let who = &caller.identity;
        Self::check_affiliation_mgr(who)?;
        Self::contains_affiliation(who, name)?;
        Self::contains_affiliation(who, new_name)?;
        if new_name.is_empty() || new_name.split('.').any(str::is_empty) {
            return Err(CaError::bad_request(
                code::UPDATE_CONFIG_MODIFY_AFF,
                format!("invalid affiliation name {new_name:?}"),
            ));
        }
        let _g = self.guard();
        if !self.store.has_affiliation(name)? {
            return Err(affiliation_not_found(name));
        }
        if self.store.has_affiliation(new_name)? {
            return Err(CaError::bad_request(
                code::UPDATE_CONFIG_MODIFY_AFF,
                format!("Affiliation '{new_name}' already exists"),
            ));
        }
        let renamed = |old: &str| old.replacen(name, new_name, 1);
        let affected: Vec<IdentityRecord> = self
            .store
            .identities()?
            .into_iter()
            .filter(|i| in_subtree(name, &i.affiliation))
            .collect();
        if !affected.is_empty() {
            if registrar_roles(who).is_none() {
                return Err(CaError::forbidden(
                    code::MISSING_REG_ATTR,
                    "Modifying affiliation affects identities, but caller is not a registrar",
                ));
            }
            if !force {
                let names: Vec<&str> = affected.iter().map(|i| i.id.as_str()).collect();
                return Err(CaError::bad_request(
                    code::UPDATE_CONFIG_MODIFY_AFF,
                    format!(
                        "The request to modify affiliation '{name}' has the following identities associated: {}. Need to use 'force' to remove identities and affiliation",
                        names.join(",")
                    ),
                ));
            }
        }
        let mut changes = Changes::default();
        let mut new_affs = Vec::new();
        for old in self
            .store
            .affiliations()?
            .into_iter()
            .filter(|a| in_subtree(name, a))
        {
            changes.delete_affiliation(&old);
            changes.put_affiliation(&renamed(&old));
            new_affs.push(renamed(&old));
        }
        let mut moved = Vec::new();
        for mut rec in affected {
            rec.affiliation = renamed(&rec.affiliation);
            let aff = Attribute {
                name: attrs::AFFILIATION.into(),
                value: rec.affiliation.clone(),
                ecert: true,
            };
            rec.attrs = attrs::merge(std::mem::take(&mut rec.attrs), &[aff]);
            changes.put_identity(&rec)?;
            moved.push(rec);
        }
        changes.use_token(&caller.token_hash, unix_now());
        self.store.apply(changes)?;
        let mut v = affiliation_tree(new_name, &new_affs, &moved);
        v["caname"] = json!(self.name());
        Ok(v)
    }

    /// `DELETE affiliations/{name}` (only with `cfg.affiliations.allowremove`): with `force`, also
    /// its sub-affiliations and (with `cfg.identities.allowremove`) its identities, whose
    /// certificates are revoked.
    pub fn remove_affiliation(
        &self,
        caller: &Caller,
        name: &str,
        force: bool,
    ) -> Result<Value, CaError> {
        let who = &caller.identity;
        Self::check_affiliation_mgr(who)?;
        let refuse = |m: String| CaError::forbidden(code::UPDATE_CONFIG_REMOVE_AFF, m);
        if !self.config.affiliations_allow_remove {
            return Err(refuse("Affiliation removal is disabled".into()));
        }
        if who.affiliation == name {
            return Err(refuse(format!(
                "Can't remove affiliation '{name}' because the caller is associated with this affiliation"
            )));
        }
        Self::contains_affiliation(who, name)?;
        let _g = self.guard();
        if !self.store.has_affiliation(name)? {
            return Err(affiliation_not_found(name));
        }
        let ids: Vec<IdentityRecord> = self
            .store
            .identities()?
            .into_iter()
            .filter(|i| in_subtree(name, &i.affiliation))
            .collect();
        if !ids.is_empty() {
            if registrar_roles(who).is_none() {
                return Err(refuse(
                    "Removing affiliation affects identities, but caller is not a registrar".into(),
                ));
            }
            if !self.config.identities_allow_remove {
                return Err(refuse("Identity removal is not allowed on server".into()));
            }
            if !force {
                let names: Vec<&str> = ids.iter().map(|i| i.id.as_str()).collect();
                return Err(refuse(format!(
                    "Cannot delete affiliation '{name}'. The affiliation has the following identities associated: {}. Need to use 'force' to remove identities and affiliation",
                    names.join(",")
                )));
            }
        }
        let affs: Vec<String> = self
            .store
            .affiliations()?
            .into_iter()
            .filter(|a| in_subtree(name, a))
            .collect();
        if affs.len() > 1 && !force {
            return Err(refuse(format!(
                "Cannot delete affiliation '{name}'. The affiliation has the following sub-affiliations: {}. Need to use 'force' to remove affiliation and sub-affiliations",
                affs.join(",")
            )));
        }
        let now = unix_now();
        let mut changes = Changes::default();
        let id_names: Vec<String> = ids.iter().map(|i| i.id.clone()).collect();
        self.revoke_all_of(&id_names, REASON_AFFILIATION_CHANGE, now, &mut changes)?;
        for id in &id_names {
            changes.delete_identity(id);
        }
        for a in &affs {
            changes.delete_affiliation(a);
        }
        changes.use_token(&caller.token_hash, now);
        self.store.apply(changes)?;
        let mut v = affiliation_tree(name, &affs, &ids);
        v["caname"] = json!(self.name());
        Ok(v)
    }

    /// `GET certificates`: the certificates matching `filter` whose owners the caller's
    /// affiliation covers; needs hf.Registrar.Roles or hf.Revoker.
    pub fn certificates(
        &self,
        caller: &Caller,
        filter: &CertificateFilter,
    ) -> Result<Vec<String>, CaError> {
        let who = &caller.identity;
        if who.attr(attrs::ROLES).is_none() && !bool_attr(who, attrs::REVOKER) {
            return Err(CaError::forbidden(
                code::AUTHORIZATION_FAILURE,
                "Caller does not posses either hf.Registrar.Roles or hf.Revoker attribute",
            ));
        }
        let owners: BTreeMap<String, String> = if who.affiliation.is_empty() {
            BTreeMap::new()
        } else {
            self.store
                .identities()?
                .into_iter()
                .map(|i| (i.id, i.affiliation))
                .collect()
        };
        let now = unix_now();
        Ok(self
            .store
            .certs()?
            .into_iter()
            .filter(|c| {
                who.affiliation.is_empty()
                    || owners
                        .get(&c.id)
                        .is_some_and(|a| affiliation_covers(&who.affiliation, a))
            })
            .filter(|c| filter.matches(c, now))
            .map(|c| c.pem)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_fabric_ca_does() {
        let now = 1_700_000_000;
        assert_eq!(parse_time("-30d", now), Ok(now - 30 * SECS_PER_DAY));
        assert_eq!(parse_time("+2h30m", now), Ok(now + 9000));
        assert_eq!(parse_time("2024-01-02", now), Ok(1_704_153_600));
        assert_eq!(parse_time("2024-01-02T00:00:10Z", now), Ok(1_704_153_610));
        assert!(parse_time("+1y", now).is_err());
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn conflicting_filters_are_refused() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let e =
            CertificateFilter::from_query(&q(&[("notexpired", "true"), ("expired_end", "-1d")]))
                .unwrap_err();
        assert_eq!((e.status, e.code), (400, code::GETTING_CERT));
        let e = CertificateFilter::from_query(&q(&[("notrevoked", "maybe")])).unwrap_err();
        assert_eq!(e.code, code::GETTING_CERT);
        let f = CertificateFilter::from_query(&q(&[("notrevoked", "TRUE"), ("id", "a")])).unwrap();
        assert!(f.not_revoked && f.id == "a");
    }
}
