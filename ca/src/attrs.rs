//! Fabric CA's attribute rules (lib/attr, lib/attrmgr): which attributes a registrar may give
//! or change, and which attributes an enrollment certificate carries.

use std::collections::BTreeMap;

use crate::authority::AttrRequest;
use crate::store::{Attribute, IdentityRecord};

pub const ROLES: &str = "hf.Registrar.Roles";
pub const DELEGATE_ROLES: &str = "hf.Registrar.DelegateRoles";
pub const REGISTRAR_ATTRS: &str = "hf.Registrar.Attributes";
pub const REVOKER: &str = "hf.Revoker";
pub const INTERMEDIATE_CA: &str = "hf.IntermediateCA";
pub const GEN_CRL: &str = "hf.GenCRL";
pub const AFFILIATION_MGR: &str = "hf.AffiliationMgr";
pub const ENROLLMENT_ID: &str = "hf.EnrollmentID";
pub const TYPE: &str = "hf.Type";
pub const AFFILIATION: &str = "hf.Affiliation";

/// Attributes whose value is true or false; giving one needs the giver to hold it as true.
const BOOLEAN_ATTRS: [&str; 4] = [REVOKER, INTERMEDIATE_CA, GEN_CRL, AFFILIATION_MGR];
/// Comma-separated lists; giving one needs the giver to hold a superset.
const LIST_ATTRS: [&str; 3] = [ROLES, DELEGATE_ROLES, REGISTRAR_ATTRS];
/// Set by the CA from the identity itself; never registered.
pub const FIXED_ATTRS: [&str; 3] = [ENROLLMENT_ID, TYPE, AFFILIATION];

/// Go's `strconv.ParseBool`, which Fabric CA uses for boolean attributes and query parameters.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The items of a comma-separated attribute value, trimmed, empty ones dropped.
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn list_contains(value: &str, item: &str) -> bool {
    list(value).iter().any(|v| v == item)
}

/// `isSubsetOf`: every item of `small` is in `big`, compared case-insensitively.
fn is_subset_of(small: &str, big: &str) -> Result<(), String> {
    let big_set: Vec<String> = big.split(',').map(str::to_lowercase).collect();
    match small
        .split(',')
        .filter(|s| !s.is_empty())
        .find(|s| !big_set.contains(&s.to_lowercase()))
    {
        Some(s) => Err(format!("'{s}' is not a member of '{big}'")),
        None => Ok(()),
    }
}

/// Whether `name` matches the registrar's `hf.Registrar.Attributes` (exact, or `prefix*`).
fn can_register_name(name: &str, allowed: &[String]) -> Result<(), String> {
    let ok = allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.trim_end_matches('*')),
        None => a == name,
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Attribute is not part of caller's '{allowed:?}' attribute list"
        ))
    }
}

fn value_of<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

/// `CanRegisterRequestedAttributes`: may `registrar` give `requested` to `user` (None for a new
/// identity)? The error is Fabric CA's reason, to be reported with code 42.
pub fn can_register(
    requested: &[Attribute],
    user: Option<&IdentityRecord>,
    registrar: &IdentityRecord,
) -> Result<(), String> {
    for attr in requested {
        can_register_one(attr, requested, user, registrar)?;
    }
    Ok(())
}

fn can_register_one(
    attr: &Attribute,
    all: &[Attribute],
    user: Option<&IdentityRecord>,
    registrar: &IdentityRecord,
) -> Result<(), String> {
    let allowed = registrar.attr(REGISTRAR_ATTRS).ok_or_else(|| {
        format!("Failed to get attribute '{REGISTRAR_ATTRS}': the registrar does not have it")
    })?;
    if allowed.is_empty() {
        return Err(format!(
            "Registrar does not have any values for '{REGISTRAR_ATTRS}' thus can't register any attributes"
        ));
    }
    let allowed = list(allowed);
    can_register_name(&attr.name, &allowed)?;
    let name = attr.name.as_str();
    let unauthorized =
        |e: String| format!("Registrar is not authorized to register attribute: {e}");
    if FIXED_ATTRS.contains(&name) {
        return Err(unauthorized(format!(
            "Cannot register fixed value attribute '{name}'"
        )));
    }
    let boolean = BOOLEAN_ATTRS.contains(&name);
    let is_list = LIST_ATTRS.contains(&name);
    if !boolean && !is_list {
        if name.starts_with("hf.") {
            return Err(format!(
                "Registering attribute '{name}' using a reserved prefix 'hf.', however this not a supported reserved attribute"
            ));
        }
        return Ok(());
    }
    // Reserved boolean and list attributes need the registrar to own them.
    let mine = registrar.attr(name).ok_or_else(|| {
        unauthorized(format!(
            "Attribute '{name}' requires ownership but the caller does not own this attribute"
        ))
    })?;
    if boolean {
        return match parse_bool(mine) {
            None => Err(unauthorized(format!(
                "Failed to get boolean value of '{mine}'"
            ))),
            Some(false) => Err(unauthorized(format!(
                "Caller has a value of 'false' for boolean attribute '{name}', can't perform any actions on this attribute"
            ))),
            Some(true) if attr.value.is_empty() || parse_bool(&attr.value).is_some() => Ok(()),
            Some(true) => Err(unauthorized(format!(
                "Failed to get boolean value of '{}'",
                attr.value
            ))),
        };
    }
    // An empty value deletes the attribute: nothing to check.
    if attr.value.is_empty() {
        return Ok(());
    }
    if name == REGISTRAR_ATTRS {
        let my_allowed = list(mine);
        for value in list(&attr.value) {
            can_register_name(&value, &my_allowed).map_err(unauthorized)?;
            // Letting someone register hf.X needs them to hold hf.X.
            if value.starts_with("hf.") && value_of(all, &value).is_none() {
                let owned = user.is_some_and(|u| u.attr(&value).is_some());
                if !owned {
                    return Err(unauthorized(match user {
                        None => format!(
                            "Requesting value of '{value}' for 'hf.Registrar.Attributes', but the identity being registered is not being registered with this attribute"
                        ),
                        Some(_) => format!(
                            "Requesting value of '{value}' for 'hf.Registrar.Attributes', but the identity does not possess this attribute nor is it being registered with this attribute"
                        ),
                    }));
                }
            }
        }
        return Ok(());
    }
    let wildcard = list_contains(mine, "*");
    if !wildcard {
        is_subset_of(&attr.value, mine).map_err(|e| {
            unauthorized(format!(
                "{e}: The requested values for attribute '{name}' is a superset of the caller's attribute value"
            ))
        })?;
    }
    if name == DELEGATE_ROLES {
        // Delegate roles must stay within the identity's own roles.
        let roles = value_of(all, ROLES)
            .map(str::to_owned)
            .or_else(|| user.and_then(|u| u.attr(ROLES)).map(str::to_owned))
            .unwrap_or_default();
        if !list_contains(&roles, "*") && is_subset_of(&attr.value, &roles).is_err() {
            return Err(unauthorized(
                "The delegateRoles field is a superset of roles".into(),
            ));
        }
    }
    Ok(())
}

/// `GetNewAttributes`: `changes` applied to `attrs` (an empty value deletes, an existing name is
/// updated, a new one added).
pub fn merge(mut attrs: Vec<Attribute>, changes: &[Attribute]) -> Vec<Attribute> {
    for change in changes {
        match attrs.iter().position(|a| a.name == change.name) {
            Some(i) if change.value.is_empty() => {
                attrs.remove(i);
            }
            Some(i) => {
                attrs[i].value = change.value.clone();
                attrs[i].ecert = change.ecert;
            }
            None if !change.value.is_empty() => attrs.push(change.clone()),
            None => {}
        }
    }
    attrs
}

/// The attributes an enrollment certificate carries (`GetAttrExtension`): without requests, the
/// identity's attributes registered with `ecert`; with requests, exactly those requested that
/// it has. The error names missing required ones.
pub fn for_certificate(
    rec: &IdentityRecord,
    requests: Option<&[AttrRequest]>,
) -> Result<BTreeMap<String, String>, String> {
    let defaults: Vec<AttrRequest>;
    let requests = match requests {
        Some(r) => r,
        None => {
            defaults = rec
                .attrs
                .iter()
                .filter(|a| a.ecert)
                .map(|a| AttrRequest {
                    name: a.name.clone(),
                    optional: false,
                })
                .collect();
            &defaults
        }
    };
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for r in requests {
        match rec.attr(&r.name) {
            Some(v) => {
                out.insert(r.name.clone(), v.to_owned());
            }
            None if !r.optional => missing.push(r.name.clone()),
            None => {}
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "The following required attributes are missing: [{}]",
            missing.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(attrs: &[(&str, &str, bool)]) -> IdentityRecord {
        IdentityRecord {
            id: "x".into(),
            secret_hash: String::new(),
            kind: "client".into(),
            affiliation: String::new(),
            attrs: attrs
                .iter()
                .map(|(n, v, e)| Attribute {
                    name: (*n).into(),
                    value: (*v).into(),
                    ecert: *e,
                })
                .collect(),
            max_enrollments: -1,
            enrollments: 0,
            revoked: false,
        }
    }

    fn a(name: &str, value: &str) -> Attribute {
        Attribute {
            name: name.into(),
            value: value.into(),
            ecert: false,
        }
    }

    #[test]
    fn certificate_attributes_follow_fabric_ca() {
        let r = rec(&[
            ("role", "doctor", true),
            ("dept", "cardio", false),
            (ENROLLMENT_ID, "x", true),
        ]);
        // No requests: the ecert ones.
        let got = for_certificate(&r, None).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["hf.EnrollmentID", "role"]);
        // Requests: exactly those, even not ecert ones; nothing else.
        let req = |n: &str, o: bool| AttrRequest {
            name: n.into(),
            optional: o,
        };
        let got = for_certificate(&r, Some(&[req("dept", false)])).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["dept"]);
        assert!(for_certificate(&r, Some(&[])).unwrap().is_empty());
        // Missing optional skipped, missing required refused.
        let got = for_certificate(&r, Some(&[req("nope", true), req("role", false)])).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["role"]);
        let e = for_certificate(&r, Some(&[req("nope", false)])).unwrap_err();
        assert!(e.contains("[nope]"), "{e}");
    }

    #[test]
    fn registrar_attributes_limit_what_may_be_given() {
        let registrar = rec(&[
            (
                REGISTRAR_ATTRS,
                "role,dept*,hf.Revoker,hf.Registrar.Roles",
                false,
            ),
            (ROLES, "client,peer", false),
            (REVOKER, "true", false),
        ]);
        assert!(can_register(&[a("role", "doctor"), a("deptName", "x")], None, &registrar).is_ok());
        assert!(can_register(&[a("patientId", "1")], None, &registrar).is_err());
        assert!(can_register(&[a(REVOKER, "true")], None, &registrar).is_ok());
        assert!(can_register(&[a(ROLES, "client")], None, &registrar).is_ok());
        assert!(can_register(&[a(ROLES, "client,admin")], None, &registrar).is_err());
        assert!(
            can_register(
                &[a(ENROLLMENT_ID, "y")],
                None,
                &rec(&[(REGISTRAR_ATTRS, "*", false)])
            )
            .is_err()
        );
        assert!(
            can_register(
                &[a("hf.Other", "y")],
                None,
                &rec(&[(REGISTRAR_ATTRS, "*", false)])
            )
            .is_err()
        );
        let no_revoker = rec(&[(REGISTRAR_ATTRS, "*", false), (REVOKER, "false", false)]);
        assert!(can_register(&[a(REVOKER, "true")], None, &no_revoker).is_err());
        // Nothing to give without hf.Registrar.Attributes.
        assert!(can_register(&[a("role", "x")], None, &rec(&[(ROLES, "*", false)])).is_err());
    }

    #[test]
    fn merging_updates_adds_and_deletes() {
        let merged = merge(
            vec![a("role", "nurse"), a("dept", "x")],
            &[
                a("role", "doctor"),
                a("dept", ""),
                a("new", "1"),
                a("gone", ""),
            ],
        );
        assert_eq!(merged, vec![a("role", "doctor"), a("new", "1")]);
    }
}
