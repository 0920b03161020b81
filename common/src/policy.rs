//! Fabric's policies: the signature-policy language (`AND('Org1MSP.peer', OutOf(2, ...))`)
//! compiled to `SignaturePolicyEnvelope`, implicit meta policies (`ANY`/`ALL`/`MAJORITY` of a
//! sub-policy across organisations), and their evaluation against signed data.

use medledger_proto::common::msp_principal::Classification;
use medledger_proto::common::signature_policy::{NOutOf, Type as RuleType};
use medledger_proto::common::{
    ImplicitMetaPolicy, MspPrincipal, MspRole, OrganizationUnit, SignaturePolicy,
    SignaturePolicyEnvelope, implicit_meta_policy::Rule, msp_role::MspRoleType,
};
use prost::Message;

use crate::msp::{Expiry, Identity, MspManager};

/// Errors parsing or evaluating a policy.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("malformed policy at offset {offset}: {reason}")]
    Syntax { offset: usize, reason: String },
    #[error("policy is not satisfied: {0}")]
    NotSatisfied(String),
    #[error("malformed policy message: {0}")]
    Malformed(String),
}

const MAX_POLICY_LEN: usize = 64 * 1024;
const MAX_DEPTH: usize = 32;

/// One signature over some bytes by some identity, as policies consume them.
#[derive(Debug, Clone, Copy)]
pub struct SignedData<'a> {
    pub data: &'a [u8],
    /// A serialized `msp.SerializedIdentity`.
    pub identity: &'a [u8],
    pub signature: &'a [u8],
}

/// Verifies each signature and returns the distinct valid signers. Signatures from unknown,
/// invalid or revoked identities, bad signatures, and repeated identities are dropped: a
/// policy then simply counts fewer signers, as in Fabric.
pub fn verified_signers(
    signed: &[SignedData<'_>],
    msps: &MspManager,
    expiry: Expiry,
) -> Vec<Identity> {
    let mut out: Vec<Identity> = Vec::with_capacity(signed.len());
    for sd in signed {
        if out.iter().any(|i| i.serialized == sd.identity) {
            continue;
        }
        let Ok(id) = msps.deserialize(sd.identity, expiry) else {
            continue;
        };
        if id.verify(sd.data, sd.signature).is_ok() {
            out.push(id);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parsing

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    principals: Vec<(String, MspRoleType)>,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, PolicyError> {
        Err(PolicyError::Syntax {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    fn skip_ws(&mut self) {
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.src.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_alphanumeric() {
            self.pos += 1;
        }
        std::str::from_utf8(&self.src[start..self.pos]).unwrap_or("")
    }

    fn quoted(&mut self) -> Result<String, PolicyError> {
        self.skip_ws();
        let Some(&q) = self.src.get(self.pos) else {
            return self.err("unexpected end of policy");
        };
        if q != b'\'' && q != b'"' {
            return self.err("expected a quoted principal or a function");
        }
        let start = self.pos + 1;
        let Some(len) = self.src[start..].iter().position(|&c| c == q) else {
            return self.err("unterminated quote");
        };
        self.pos = start + len + 1;
        String::from_utf8(self.src[start..start + len].to_vec())
            .or_else(|_| self.err("principal is not UTF-8"))
    }

    fn principal_index(&mut self, text: &str) -> Result<i32, PolicyError> {
        let Some((msp, role)) = text.rsplit_once('.') else {
            return self.err(format!("principal {text:?} is not MSPID.role"));
        };
        let valid_msp = !msp.is_empty()
            && msp
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
        if !valid_msp {
            return self.err(format!("invalid MSP id in {text:?}"));
        }
        let role = match role {
            "member" => MspRoleType::Member,
            "admin" => MspRoleType::Admin,
            "client" => MspRoleType::Client,
            "peer" => MspRoleType::Peer,
            "orderer" => MspRoleType::Orderer,
            other => {
                return self.err(format!(
                    "unknown role {other:?} (member, admin, client, peer, orderer)"
                ));
            }
        };
        let key = (msp.to_owned(), role);
        if let Some(i) = self.principals.iter().position(|p| *p == key) {
            return Ok(i as i32);
        }
        self.principals.push(key);
        Ok(self.principals.len() as i32 - 1)
    }

    fn expr(&mut self, depth: usize) -> Result<SignaturePolicy, PolicyError> {
        if depth > MAX_DEPTH {
            return self.err("policy nested too deeply");
        }
        self.skip_ws();
        if matches!(self.src.get(self.pos), Some(b'\'') | Some(b'"')) {
            let text = self.quoted()?;
            let idx = self.principal_index(&text)?;
            return Ok(SignaturePolicy {
                r#type: Some(RuleType::SignedBy(idx)),
            });
        }
        let name_at = self.pos;
        let name = self.ident().to_ascii_lowercase();
        if !self.eat(b'(') {
            self.pos = name_at;
            return self.err("expected AND(, OR(, OutOf( or a quoted principal");
        }
        let n_required = match name.as_str() {
            "and" | "or" => None,
            "outof" => {
                self.skip_ws();
                let quoted = matches!(self.src.get(self.pos), Some(b'\'') | Some(b'"'));
                let text = if quoted {
                    self.quoted()?
                } else {
                    let start = self.pos;
                    while self.pos < self.src.len() && self.src[self.pos].is_ascii_digit() {
                        self.pos += 1;
                    }
                    String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
                };
                let Ok(n) = text.parse::<i32>() else {
                    return self.err(format!("OutOf needs a number first, found {text:?}"));
                };
                if !self.eat(b',') {
                    return self.err("expected ',' after the OutOf count");
                }
                Some(n)
            }
            _ => {
                self.pos = name_at;
                return self.err(format!("unknown function {name:?}"));
            }
        };
        let mut rules = vec![self.expr(depth + 1)?];
        while self.eat(b',') {
            rules.push(self.expr(depth + 1)?);
        }
        if !self.eat(b')') {
            return self.err("expected ',' or ')'");
        }
        let n = match (name.as_str(), n_required) {
            ("and", _) => rules.len() as i32,
            ("or", _) => 1,
            (_, Some(n)) => n,
            _ => unreachable!("function names were matched above"),
        };
        if n < 1 || n as usize > rules.len() {
            return self.err(format!(
                "OutOf({n}, ...) needs 1 <= n <= {} sub-policies",
                rules.len()
            ));
        }
        Ok(SignaturePolicy {
            r#type: Some(RuleType::NOutOf(NOutOf { n, rules })),
        })
    }
}

/// Compiles Fabric's policy language into a `SignaturePolicyEnvelope`.
pub fn parse_signature_policy(text: &str) -> Result<SignaturePolicyEnvelope, PolicyError> {
    if text.len() > MAX_POLICY_LEN {
        return Err(PolicyError::Syntax {
            offset: MAX_POLICY_LEN,
            reason: "policy text too long".into(),
        });
    }
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        principals: Vec::new(),
    };
    let rule = p.expr(0)?;
    p.skip_ws();
    if p.pos != p.src.len() {
        return p.err("unexpected text after the policy");
    }
    Ok(SignaturePolicyEnvelope {
        version: 0,
        rule: Some(rule),
        identities: p
            .principals
            .into_iter()
            .map(|(msp, role)| role_principal(&msp, role))
            .collect(),
    })
}

/// A principal naming a role in an MSP.
pub fn role_principal(mspid: &str, role: MspRoleType) -> MspPrincipal {
    MspPrincipal {
        principal_classification: Classification::Role as i32,
        principal: MspRole {
            msp_identifier: mspid.to_owned(),
            role: role as i32,
        }
        .encode_to_vec(),
    }
}

/// `OutOf(n, 'm1.role', 'm2.role', ...)` over one principal per MSP, e.g. for consenter quorums.
pub fn n_out_of_roles(n: i32, principals: &[(String, MspRoleType)]) -> SignaturePolicyEnvelope {
    SignaturePolicyEnvelope {
        version: 0,
        rule: Some(SignaturePolicy {
            r#type: Some(RuleType::NOutOf(NOutOf {
                n,
                rules: (0..principals.len() as i32)
                    .map(|i| SignaturePolicy {
                        r#type: Some(RuleType::SignedBy(i)),
                    })
                    .collect(),
            })),
        }),
        identities: principals
            .iter()
            .map(|(m, r)| role_principal(m, *r))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Evaluates a rule over `n` candidate signers, `satisfies(k, principal)` telling whether
/// candidate `k` satisfies a principal; each candidate counts for at most one principal.
fn eval_rule(
    rule: &SignaturePolicy,
    principals: &[MspPrincipal],
    satisfies: &dyn Fn(usize, &MspPrincipal) -> bool,
    used: &mut [bool],
    depth: usize,
) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match &rule.r#type {
        Some(RuleType::SignedBy(i)) => {
            let Some(p) = usize::try_from(*i).ok().and_then(|i| principals.get(i)) else {
                return false;
            };
            for (k, u) in used.iter_mut().enumerate() {
                if !*u && satisfies(k, p) {
                    *u = true;
                    return true;
                }
            }
            false
        }
        Some(RuleType::NOutOf(n)) => {
            let mut satisfied = 0;
            for sub in &n.rules {
                let mut trial = used.to_vec();
                if eval_rule(sub, principals, satisfies, &mut trial, depth + 1) {
                    used.copy_from_slice(&trial);
                    satisfied += 1;
                }
            }
            satisfied >= n.n
        }
        None => false,
    }
}

fn envelope_satisfied(
    env: &SignaturePolicyEnvelope,
    n: usize,
    satisfies: &dyn Fn(usize, &MspPrincipal) -> bool,
) -> bool {
    let Some(rule) = &env.rule else { return false };
    let mut used = vec![false; n];
    eval_rule(rule, &env.identities, satisfies, &mut used, 0)
}

/// Whether distinct, already-verified signers satisfy a signature policy. Each signer counts
/// for at most one principal.
pub fn signature_policy_satisfied(env: &SignaturePolicyEnvelope, signers: &[Identity]) -> bool {
    envelope_satisfied(env, signers.len(), &|k, p| signers[k].satisfies(p))
}

/// The MSP a role or organisational-unit principal names (`None` for other principals).
pub fn principal_msp_id(p: &MspPrincipal) -> Option<String> {
    match Classification::try_from(p.principal_classification) {
        Ok(Classification::Role) => MspRole::decode(p.principal.as_slice())
            .ok()
            .map(|r| r.msp_identifier),
        Ok(Classification::OrganizationUnit) => OrganizationUnit::decode(p.principal.as_slice())
            .ok()
            .map(|o| o.msp_identifier),
        _ => None,
    }
}

/// A policy as channel configuration and chaincode definitions hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Signature(SignaturePolicyEnvelope),
    /// `rule` of the same-named sub-policy of each organisation.
    ImplicitMeta {
        rule: Rule,
        sub_policies: Vec<Policy>,
    },
}

impl Policy {
    /// A policy no set of signers satisfies.
    pub fn reject() -> Self {
        Policy::ImplicitMeta {
            rule: Rule::Any,
            sub_policies: Vec::new(),
        }
    }

    /// Evaluates against verified signers.
    pub fn satisfied_by(&self, signers: &[Identity]) -> bool {
        self.satisfied(signers.len(), &|k, p| signers[k].satisfies(p))
    }

    /// Evaluates with each organisation counting as one signer of any principal naming its MSP
    /// (how lifecycle approvals are weighed against LifecycleEndorsement).
    pub fn satisfied_by_organisations(&self, orgs: &[&str]) -> bool {
        self.satisfied(orgs.len(), &|k, p| {
            principal_msp_id(p).is_some_and(|m| m == orgs[k])
        })
    }

    fn satisfied(&self, n: usize, satisfies: &dyn Fn(usize, &MspPrincipal) -> bool) -> bool {
        match self {
            Policy::Signature(env) => envelope_satisfied(env, n, satisfies),
            Policy::ImplicitMeta { rule, sub_policies } => {
                let ok = sub_policies
                    .iter()
                    .filter(|p| p.satisfied(n, satisfies))
                    .count();
                let threshold = match rule {
                    Rule::Any => 1,
                    Rule::All => sub_policies.len(),
                    Rule::Majority => sub_policies.len() / 2 + 1,
                };
                ok >= threshold
            }
        }
    }

    /// Verifies the signatures, then evaluates; the error says how many valid signers there were.
    pub fn evaluate(
        &self,
        signed: &[SignedData<'_>],
        msps: &MspManager,
        expiry: Expiry,
    ) -> Result<(), PolicyError> {
        let signers = verified_signers(signed, msps, expiry);
        if self.satisfied_by(&signers) {
            Ok(())
        } else {
            Err(PolicyError::NotSatisfied(format!(
                "{} valid distinct signer(s) of {} signature(s) do not satisfy the policy",
                signers.len(),
                signed.len()
            )))
        }
    }
}

/// Decodes an `ImplicitMetaPolicy` value.
pub fn decode_implicit_meta(bytes: &[u8]) -> Result<ImplicitMetaPolicy, PolicyError> {
    ImplicitMetaPolicy::decode(bytes).map_err(|e| PolicyError::Malformed(e.to_string()))
}

/// Decodes a `SignaturePolicyEnvelope` value.
pub fn decode_signature_policy(bytes: &[u8]) -> Result<SignaturePolicyEnvelope, PolicyError> {
    SignaturePolicyEnvelope::decode(bytes).map_err(|e| PolicyError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisations_count_once_each_against_signature_and_meta_policies() {
        let both = Policy::Signature(parse_signature_policy("AND('A.peer', 'B.member')").unwrap());
        assert!(both.satisfied_by_organisations(&["A", "B"]));
        assert!(!both.satisfied_by_organisations(&["A"]));
        assert!(!both.satisfied_by_organisations(&["A", "C"]));
        let majority = Policy::ImplicitMeta {
            rule: Rule::Majority,
            sub_policies: ["A", "B", "C"]
                .iter()
                .map(|o| {
                    Policy::Signature(parse_signature_policy(&format!("OR('{o}.peer')")).unwrap())
                })
                .collect(),
        };
        assert!(majority.satisfied_by_organisations(&["A", "C"]));
        assert!(!majority.satisfied_by_organisations(&["B"]));
        assert!(!majority.satisfied_by_organisations(&[]));
    }

    fn principals(env: &SignaturePolicyEnvelope) -> Vec<(String, i32)> {
        env.identities
            .iter()
            .map(|p| {
                let r = MspRole::decode(p.principal.as_slice()).unwrap();
                (r.msp_identifier, r.role)
            })
            .collect()
    }

    #[test]
    fn parses_nested_policies() {
        let env = parse_signature_policy(
            "AND('Hospital1MSP.peer', OR('Hospital2MSP.member', \"Hospital3MSP.admin\"))",
        )
        .unwrap();
        assert_eq!(
            principals(&env),
            vec![
                ("Hospital1MSP".into(), MspRoleType::Peer as i32),
                ("Hospital2MSP".into(), MspRoleType::Member as i32),
                ("Hospital3MSP".into(), MspRoleType::Admin as i32),
            ]
        );
        let Some(RuleType::NOutOf(top)) = env.rule.unwrap().r#type else {
            panic!("expected NOutOf")
        };
        assert_eq!(top.n, 2);
        assert_eq!(top.rules.len(), 2);
        let Some(RuleType::NOutOf(or)) = &top.rules[1].r#type else {
            panic!("expected NOutOf")
        };
        assert_eq!(or.n, 1);
    }

    #[test]
    fn out_of_and_lowercase_and_repeated_principals() {
        let env = parse_signature_policy("outof(2, 'A.member', 'B.member', 'A.member')").unwrap();
        assert_eq!(
            env.identities.len(),
            2,
            "repeated principals share one entry"
        );
        let env = parse_signature_policy("OutOf('1', 'A.peer')").unwrap();
        assert_eq!(env.identities.len(), 1);
    }

    #[test]
    fn malformed_policies_are_typed_errors() {
        for bad in [
            "",
            "AND(",
            "AND('A.member'",
            "AND('A.member',)",
            "XOR('A.member')",
            "'A.boss'",
            "'Amember'",
            "'.member'",
            "OutOf(3, 'A.member', 'B.member')",
            "OutOf(0, 'A.member')",
            "OutOf(x, 'A.member')",
            "AND('A.member') trailing",
            "'unterminated",
            &"AND(".repeat(100),
        ] {
            assert!(
                matches!(parse_signature_policy(bad), Err(PolicyError::Syntax { .. })),
                "{bad:?} should be a syntax error"
            );
        }
    }
}
