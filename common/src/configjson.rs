//! Fabric's `configtxlator proto_decode` / `proto_encode`: protobuf bytes ⇄ JSON in the shape
//! Fabric's `protolator` (hyperledger/fabric-config) prints.
//!
//! The JSON is proto3 JSON as Go's `protojson` writes it with `UseProtoNames` and
//! `EmitUnpopulated` (snake_case field names, every field present, bytes in base64, enums by
//! name, 64-bit integers as strings, unset messages as `null`, timestamps in RFC 3339), with
//! protolator's expansions of opaque byte fields into the messages they carry:
//! `Envelope.payload` → `Payload`; `Payload.data` by the channel header's type (CONFIG →
//! `ConfigEnvelope`, CONFIG_UPDATE → `ConfigUpdateEnvelope`, ENDORSER_TRANSACTION →
//! `protos.Transaction`, ORDERER_TRANSACTION → `Envelope`, MESSAGE → `ConfigValue`); headers,
//! creators, `ConfigUpdateEnvelope.config_update`, block data entries as `Envelope`s; the values
//! of a configuration tree by their key and the group they are in (MSP, BatchSize,
//! ConsensusType with its BFT options, Capabilities, Endpoints, AnchorPeers, ACLs, ...);
//! policies by their type; MSP configurations and principals; and a transaction down to its
//! read-write sets. Where protolator refuses (an unknown configuration value name, a payload type
//! it does not know) this module refuses too. Block metadata stays base64, as protolator leaves it.
//!
//! Two deliberate differences, both invisible to a JSON reader: object keys of message fields
//! are sorted (as Go prints them) but the entries of a protobuf map keep their order on the wire,
//! and encoding writes map entries in the JSON's order, the way prost writes them (default key or
//! value left out). So decode → encode gives back the same bytes for anything MedLedger wrote (its
//! maps are in no particular order), and for a deterministically encoded message (sorted maps,
//! as Fabric's configtxlator writes) the text is Fabric's. A field the descriptors do not know is
//! refused rather than dropped: an edited configuration must not lose what it carried.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use base64::Engine;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// The largest protobuf input accepted (Fabric's default gRPC message limit).
pub const MAX_PROTO_BYTES: usize = 100 << 20;
/// The largest JSON input accepted (a 100 MiB message in base64 with its structure).
pub const MAX_JSON_BYTES: usize = 300 << 20;
/// How deep messages may nest (a configuration block is about 15 deep, a transaction about 20).
pub const MAX_DEPTH: usize = 64;
/// How many messages one conversion may produce or read, however small they are: bounds the
/// JSON a small but dense input expands to.
pub const MAX_MESSAGES: usize = 4_000_000;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigJsonError {
    #[error(
        "unknown message type {0:?}: name a Fabric message such as common.Block, common.Envelope, \
         common.Config, common.ConfigEnvelope, common.ConfigUpdate or common.ConfigUpdateEnvelope"
    )]
    UnknownType(String),
    #[error("the input is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("cannot decode {type_name} at {path}: {reason}")]
    Decode {
        type_name: String,
        path: String,
        reason: String,
    },
    #[error("cannot encode {type_name} at {path}: {reason}")]
    Encode {
        type_name: String,
        path: String,
        reason: String,
    },
    #[error("the compiled protobuf descriptors are unusable: {0}")]
    Descriptors(String),
}

/// Whether `type_name` (e.g. `common.Block`) is a message this module converts.
pub fn is_known_type(type_name: &str) -> bool {
    schema().is_ok_and(|s| s.messages.contains_key(type_name.trim_start_matches('.')))
}

/// The JSON (tab-indented, as `configtxlator proto_decode` prints it) of the `type_name`
/// message in `bytes`.
pub fn proto_decode(type_name: &str, bytes: &[u8]) -> Result<String, ConfigJsonError> {
    if bytes.len() > MAX_PROTO_BYTES {
        return Err(ConfigJsonError::TooLarge {
            size: bytes.len(),
            limit: MAX_PROTO_BYTES,
        });
    }
    let schema = schema()?;
    let name = type_name.trim_start_matches('.');
    if !schema.messages.contains_key(name) {
        return Err(ConfigJsonError::UnknownType(type_name.to_owned()));
    }
    let mut d = Walker::new(schema);
    let json = d
        .decode_message(name, &Ctx::None, bytes)
        .map_err(|reason| ConfigJsonError::Decode {
            type_name: name.to_owned(),
            path: d.path(),
            reason,
        })?;
    let mut out = String::new();
    write_json(&mut out, &json, 0);
    out.push('\n');
    Ok(out)
}

/// The protobuf bytes of the `type_name` message `json` describes (as `configtxlator
/// proto_encode`).
pub fn proto_encode(type_name: &str, json: &[u8]) -> Result<Vec<u8>, ConfigJsonError> {
    if json.len() > MAX_JSON_BYTES {
        return Err(ConfigJsonError::TooLarge {
            size: json.len(),
            limit: MAX_JSON_BYTES,
        });
    }
    let schema = schema()?;
    let name = type_name.trim_start_matches('.');
    if !schema.messages.contains_key(name) {
        return Err(ConfigJsonError::UnknownType(type_name.to_owned()));
    }
    let value: Json =
        serde_json::from_slice(json).map_err(|e| ConfigJsonError::Json(e.to_string()))?;
    let mut e = Walker::new(schema);
    let mut out = Vec::new();
    e.encode_message(name, &Ctx::None, &value, &mut out)
        .map_err(|reason| ConfigJsonError::Encode {
            type_name: name.to_owned(),
            path: e.path(),
            reason,
        })?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Descriptors

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Double,
    Float,
    Int64,
    Uint64,
    Int32,
    Fixed64,
    Fixed32,
    Bool,
    String,
    Bytes,
    Uint32,
    Sfixed32,
    Sfixed64,
    Sint32,
    Sint64,
}

impl Scalar {
    fn packable(self) -> bool {
        !matches!(self, Scalar::String | Scalar::Bytes)
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Scalar(Scalar),
    Enum(String),
    Message(String),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    json_name: String,
    number: u32,
    kind: Kind,
    repeated: bool,
    packed: bool,
    oneof: Option<i32>,
    map: bool,
}

#[derive(Debug, Default)]
struct MessageType {
    /// By field number.
    fields: Vec<Field>,
    map_entry: bool,
}

impl MessageType {
    fn by_number(&self, n: u32) -> Option<usize> {
        self.fields.binary_search_by_key(&n, |f| f.number).ok()
    }
    fn by_name(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.name == name || f.json_name == name)
    }
}

#[derive(Debug, Default)]
struct Schema {
    messages: HashMap<String, MessageType>,
    /// Enum name → its values (name, number) in declaration order.
    enums: HashMap<String, Vec<(String, i32)>>,
}

impl Schema {
    fn message(&self, name: &str) -> Result<&MessageType, String> {
        self.messages
            .get(name)
            .ok_or_else(|| format!("MedLedger does not know the message type {name}"))
    }
    fn enum_name(&self, enum_type: &str, n: i32) -> Option<&str> {
        self.enums
            .get(enum_type)?
            .iter()
            .find(|(_, v)| *v == n)
            .map(|(s, _)| s.as_str())
    }
    fn enum_number(&self, enum_type: &str, name: &str) -> Option<i32> {
        self.enums
            .get(enum_type)?
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, v)| *v)
    }
}

fn schema() -> Result<&'static Schema, ConfigJsonError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| build_schema(medledger_proto::FILE_DESCRIPTOR_SET))
        .as_ref()
        .map_err(|e| ConfigJsonError::Descriptors(e.clone()))
}

fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn scalar_of(t: Type) -> Option<Scalar> {
    Some(match t {
        Type::Double => Scalar::Double,
        Type::Float => Scalar::Float,
        Type::Int64 => Scalar::Int64,
        Type::Uint64 => Scalar::Uint64,
        Type::Int32 => Scalar::Int32,
        Type::Fixed64 => Scalar::Fixed64,
        Type::Fixed32 => Scalar::Fixed32,
        Type::Bool => Scalar::Bool,
        Type::String => Scalar::String,
        Type::Bytes => Scalar::Bytes,
        Type::Uint32 => Scalar::Uint32,
        Type::Sfixed32 => Scalar::Sfixed32,
        Type::Sfixed64 => Scalar::Sfixed64,
        Type::Sint32 => Scalar::Sint32,
        Type::Sint64 => Scalar::Sint64,
        Type::Group | Type::Message | Type::Enum => return None,
    })
}

fn register(
    schema: &mut Schema,
    prefix: &str,
    proto3: bool,
    m: &DescriptorProto,
) -> Result<(), String> {
    let full = format!("{prefix}{}", m.name());
    for e in &m.enum_type {
        schema.enums.insert(
            format!("{full}.{}", e.name()),
            e.value
                .iter()
                .map(|v| (v.name().to_owned(), v.number()))
                .collect(),
        );
    }
    for nested in &m.nested_type {
        register(schema, &format!("{full}."), proto3, nested)?;
    }
    let mut fields = Vec::new();
    for f in &m.field {
        let kind = match f.r#type() {
            Type::Message => Kind::Message(f.type_name().trim_start_matches('.').to_owned()),
            Type::Enum => Kind::Enum(f.type_name().trim_start_matches('.').to_owned()),
            Type::Group => return Err(format!("{full}.{}: groups are not supported", f.name())),
            t => Kind::Scalar(scalar_of(t).ok_or("unreachable scalar")?),
        };
        let repeated = f.label() == Label::Repeated;
        let packable = match &kind {
            Kind::Scalar(s) => s.packable(),
            Kind::Enum(_) => true,
            Kind::Message(_) => false,
        };
        let packed =
            repeated && packable && f.options.as_ref().and_then(|o| o.packed).unwrap_or(proto3);
        fields.push(Field {
            name: f.name().to_owned(),
            json_name: f.json_name.clone().unwrap_or_else(|| lower_camel(f.name())),
            number: u32::try_from(f.number()).map_err(|_| format!("{full}: bad field number"))?,
            kind,
            repeated,
            packed,
            // A proto3 `optional` is a synthetic one-member oneof: presence, like a oneof.
            oneof: f.oneof_index,
            map: false,
        });
    }
    fields.sort_by_key(|f| f.number);
    schema.messages.insert(
        full,
        MessageType {
            fields,
            map_entry: m.options.as_ref().and_then(|o| o.map_entry) == Some(true),
        },
    );
    Ok(())
}

/// Fabric messages protolator may expand into that MedLedger's protos do not carry (nodes never
/// read them): known here so that a Fabric block using them still converts.
fn supplement(schema: &mut Schema) {
    use Scalar::*;
    let s = |k: Scalar| Kind::Scalar(k);
    let m = |t: &str| Kind::Message(t.to_owned());
    // (message, [(field, number, kind, repeated)])
    type Fields = Vec<(&'static str, u32, Kind, bool)>;
    let table: Vec<(&str, Fields)> = vec![
        ("google.protobuf.Empty", vec![]),
        (
            "google.protobuf.Timestamp",
            vec![
                ("seconds", 1, s(Int64), false),
                ("nanos", 2, s(Int32), false),
            ],
        ),
        (
            "orderer.KafkaBrokers",
            vec![("brokers", 1, s(String), true)],
        ),
        (
            "msp.IdemixMSPConfig",
            vec![
                ("name", 1, s(String), false),
                ("ipk", 2, s(Bytes), false),
                ("signer", 3, m("msp.IdemixMSPSignerConfig"), false),
                ("revocation_pk", 4, s(Bytes), false),
                ("epoch", 5, s(Int64), false),
            ],
        ),
        (
            "msp.IdemixMSPSignerConfig",
            vec![
                ("cred", 1, s(Bytes), false),
                ("sk", 2, s(Bytes), false),
                ("organizational_unit_identifier", 3, s(String), false),
                ("role", 4, s(Int32), false),
                ("enrollment_id", 5, s(String), false),
                ("credential_revocation_information", 6, s(Bytes), false),
            ],
        ),
        (
            "etcdraft.ConfigMetadata",
            vec![
                ("consenters", 1, m("etcdraft.Consenter"), true),
                ("options", 2, m("etcdraft.Options"), false),
            ],
        ),
        (
            "etcdraft.Consenter",
            vec![
                ("host", 1, s(String), false),
                ("port", 2, s(Uint32), false),
                ("client_tls_cert", 3, s(Bytes), false),
                ("server_tls_cert", 4, s(Bytes), false),
            ],
        ),
        (
            "etcdraft.Options",
            vec![
                ("tick_interval", 1, s(String), false),
                ("election_tick", 2, s(Uint32), false),
                ("heartbeat_tick", 3, s(Uint32), false),
                ("max_inflight_blocks", 4, s(Uint32), false),
                ("snapshot_interval_size", 5, s(Uint32), false),
            ],
        ),
    ];
    for (name, fields) in table {
        if schema.messages.contains_key(name) {
            continue;
        }
        let fields = fields
            .into_iter()
            .map(|(n, number, kind, repeated)| Field {
                name: n.to_owned(),
                json_name: lower_camel(n),
                number,
                packed: repeated && matches!(kind, Kind::Scalar(k) if k.packable()),
                kind,
                repeated,
                oneof: None,
                map: false,
            })
            .collect();
        schema.messages.insert(
            name.to_owned(),
            MessageType {
                fields,
                map_entry: false,
            },
        );
    }
}

fn build_schema(descriptor_set: &[u8]) -> Result<Schema, String> {
    let set = FileDescriptorSet::decode(descriptor_set).map_err(|e| e.to_string())?;
    let mut schema = Schema::default();
    for file in &set.file {
        let prefix = match file.package() {
            "" => String::new(),
            p => format!("{p}."),
        };
        let proto3 = file.syntax() == "proto3";
        for e in &file.enum_type {
            schema.enums.insert(
                format!("{prefix}{}", e.name()),
                e.value
                    .iter()
                    .map(|v| (v.name().to_owned(), v.number()))
                    .collect(),
            );
        }
        for m in &file.message_type {
            register(&mut schema, &prefix, proto3, m)?;
        }
    }
    supplement(&mut schema);
    let entries: HashSet<String> = schema
        .messages
        .iter()
        .filter(|(_, m)| m.map_entry)
        .map(|(n, _)| n.clone())
        .collect();
    for m in schema.messages.values_mut() {
        for f in &mut m.fields {
            if let Kind::Message(t) = &f.kind {
                f.map = f.repeated && entries.contains(t);
            }
        }
    }
    Ok(schema)
}

// ---------------------------------------------------------------------------------------------
// protolator's expansions

/// Which part of a configuration tree a group is (protolator's `Dynamic*Group` wrappers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Channel,
    Orderer,
    OrdererOrg,
    Application,
    ApplicationOrg,
    Consortiums,
    Consortium,
    ConsortiumOrg,
}

impl Group {
    fn child(self, key: &str) -> Result<Group, String> {
        match (self, key) {
            (Group::Channel, "Orderer") => Ok(Group::Orderer),
            (Group::Channel, "Application") => Ok(Group::Application),
            (Group::Channel, "Consortiums") => Ok(Group::Consortiums),
            (Group::Channel, k) => Err(format!("unknown channel group sub-group '{k}'")),
            (Group::Orderer, _) => Ok(Group::OrdererOrg),
            (Group::Application, _) => Ok(Group::ApplicationOrg),
            (Group::Consortiums, _) => Ok(Group::Consortium),
            (Group::Consortium, _) => Ok(Group::ConsortiumOrg),
            (Group::OrdererOrg, _) => Err("the orderer orgs do not support sub-groups".into()),
            (Group::ApplicationOrg, _) => {
                Err("the application orgs do not support sub-groups".into())
            }
            (Group::ConsortiumOrg, _) => {
                Err("ConsortiumOrg groups do not support sub groups".into())
            }
        }
    }

    /// The message a value named `key` of this group holds.
    fn value_type(self, key: &str) -> Result<&'static str, String> {
        let t = match (self, key) {
            (Group::Channel, "HashingAlgorithm") => "common.HashingAlgorithm",
            (Group::Channel, "BlockDataHashingStructure") => "common.BlockDataHashingStructure",
            (Group::Channel, "OrdererAddresses") => "common.OrdererAddresses",
            (Group::Channel, "Consortium") => "common.Consortium",
            (Group::Channel, "Capabilities") => "common.Capabilities",
            (Group::Orderer, "ConsensusType") => "orderer.ConsensusType",
            (Group::Orderer, "BatchSize") => "orderer.BatchSize",
            (Group::Orderer, "BatchTimeout") => "orderer.BatchTimeout",
            (Group::Orderer, "KafkaBrokers") => "orderer.KafkaBrokers",
            (Group::Orderer, "ChannelRestrictions") => "orderer.ChannelRestrictions",
            (Group::Orderer, "Capabilities") => "common.Capabilities",
            (Group::Orderer, "Orderers") => "common.Orderers",
            (Group::OrdererOrg, "MSP") => "msp.MSPConfig",
            (Group::OrdererOrg, "Endpoints") => "common.OrdererAddresses",
            (Group::Application, "Capabilities") => "common.Capabilities",
            (Group::Application, "ACLs") => "protos.ACLs",
            (Group::ApplicationOrg, "MSP") => "msp.MSPConfig",
            (Group::ApplicationOrg, "AnchorPeers") => "protos.AnchorPeers",
            (Group::Consortium, "ChannelCreationPolicy") => "common.Policy",
            (Group::ConsortiumOrg, "MSP") => "msp.MSPConfig",
            (g, k) => {
                let what = match g {
                    Group::Channel => "Channel",
                    Group::Orderer => "Orderer",
                    Group::OrdererOrg => "Orderer Org",
                    Group::Application => "Application",
                    Group::ApplicationOrg => "Application Org",
                    Group::Consortiums => "Consortiums",
                    Group::Consortium => "Consortium",
                    Group::ConsortiumOrg => "Consortium Org",
                };
                return Err(format!("unknown {what} ConfigValue name: {k}"));
            }
        };
        Ok(t)
    }
}

/// What protolator knows about a message from where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ctx {
    None,
    Group(Group),
    Value(Group, String),
    /// A namespace's read-write set in a KV transaction.
    KvNamespace,
    /// A collection's hashed read-write set in a KV transaction.
    KvCollection,
}

/// How protolator treats one field (or one entry of a repeated or map field).
enum Special {
    /// As protojson does; nested messages with no context.
    Plain,
    /// A message field whose meaning depends on where it sits.
    Within(Ctx),
    /// A bytes field holding a marshaled message.
    Opaque(&'static str, Ctx),
}

/// A sibling value that decides a variably opaque field's type.
#[derive(Clone, Copy)]
enum Sel {
    /// An integer or enum field of the same message.
    Int(&'static str),
    /// A string field of the same message.
    Text(&'static str),
    /// `Payload.header.channel_header.type`.
    PayloadType,
}

enum Fact {
    Int(i64),
    Text(String),
}

impl Fact {
    fn int(self) -> i64 {
        match self {
            Fact::Int(i) => i,
            Fact::Text(_) => 0,
        }
    }
    fn text(self) -> String {
        match self {
            Fact::Text(s) => s,
            Fact::Int(_) => String::new(),
        }
    }
}

/// protolator's rule for field `field` of message `msg` in context `ctx`, for a value that is
/// present (protolator only consults its rules for fields that are set). `key` is the map key.
fn special(
    msg: &str,
    ctx: &Ctx,
    field: &str,
    key: &str,
    fact: &mut dyn FnMut(Sel) -> Result<Fact, String>,
) -> Result<Special, String> {
    use Special::{Opaque, Plain, Within};
    let op = |t: &'static str| Opaque(t, Ctx::None);
    Ok(match (msg, field) {
        ("common.Envelope", "payload") => op("common.Payload"),
        ("common.Payload", "data") => match fact(Sel::PayloadType)?.int() {
            1 => op("common.ConfigEnvelope"),
            4 => op("common.Envelope"),
            2 => op("common.ConfigUpdateEnvelope"),
            0 => op("common.ConfigValue"),
            3 => op("protos.Transaction"),
            t => return Err(format!("decoding type {t} is unimplemented")),
        },
        ("common.ChannelHeader", "extension") => match fact(Sel::Int("type"))?.int() {
            3 => op("protos.ChaincodeHeaderExtension"),
            _ => {
                return Err("channel header extension only valid for endorser transactions".into());
            }
        },
        ("common.Header", "channel_header") => op("common.ChannelHeader"),
        ("common.Header", "signature_header") => op("common.SignatureHeader"),
        ("common.SignatureHeader", "creator") => op("msp.SerializedIdentity"),
        ("common.BlockData", "data") => op("common.Envelope"),
        ("common.ConfigUpdateEnvelope", "config_update") => op("common.ConfigUpdate"),
        ("common.ConfigSignature", "signature_header") => op("common.SignatureHeader"),
        ("common.Config", "channel_group") => Within(Ctx::Group(Group::Channel)),
        ("common.ConfigUpdate", "read_set" | "write_set") => Within(Ctx::Group(Group::Channel)),
        ("common.ConfigUpdate", "isolated_data") => {
            return Err(format!("Unknown map key: {key}"));
        }
        ("common.ConfigGroup", "groups") => match ctx {
            Ctx::Group(g) => Within(Ctx::Group(g.child(key)?)),
            _ => Plain,
        },
        ("common.ConfigGroup", "values") => match ctx {
            Ctx::Group(Group::Consortiums) => {
                return Err("Consortiums currently support no config values".into());
            }
            Ctx::Group(g) => Within(Ctx::Value(*g, key.to_owned())),
            _ => Plain,
        },
        ("common.ConfigValue", "value") => match ctx {
            Ctx::Value(g, name) => op(g.value_type(name)?),
            _ => Plain,
        },
        ("common.Policy", "value") => match fact(Sel::Int("type"))?.int() {
            1 => op("common.SignaturePolicyEnvelope"),
            3 => op("common.ImplicitMetaPolicy"),
            t => return Err(format!("unable to decode policy type: {t}")),
        },
        ("msp.MSPConfig", "config") => match fact(Sel::Int("type"))?.int() {
            0 => op("msp.FabricMSPConfig"),
            1 => op("msp.IdemixMSPConfig"),
            t => return Err(format!("unable to decode MSP type: {t}")),
        },
        // msp_principal.proto is package `common` (Go package msp).
        ("common.MSPPrincipal", "principal") => {
            match fact(Sel::Int("principal_classification"))?.int() {
                0 => op("common.MSPRole"),
                1 => op("common.OrganizationUnit"),
                2 => op("msp.SerializedIdentity"),
                t => return Err(format!("unable to decode MSP type: {t}")),
            }
        }
        ("orderer.ConsensusType", "metadata") => match fact(Sel::Text("type"))?.text().as_str() {
            "etcdraft" => op("etcdraft.ConfigMetadata"),
            "BFT" => op("orderer.smartbft.Options"),
            _ => op("google.protobuf.Empty"),
        },
        ("protos.ChaincodeProposalPayload", "input") => op("protos.ChaincodeInvocationSpec"),
        ("protos.ChaincodeAction", "results") => op("rwset.TxReadWriteSet"),
        ("protos.ChaincodeAction", "events") => op("protos.ChaincodeEvent"),
        ("protos.ProposalResponsePayload", "extension") => op("protos.ChaincodeAction"),
        ("protos.TransactionAction", "header") => op("common.SignatureHeader"),
        ("protos.TransactionAction", "payload") => op("protos.ChaincodeActionPayload"),
        ("protos.ChaincodeActionPayload", "chaincode_proposal_payload") => {
            op("protos.ChaincodeProposalPayload")
        }
        ("protos.ChaincodeEndorsedAction", "proposal_response_payload") => {
            op("protos.ProposalResponsePayload")
        }
        ("rwset.TxReadWriteSet", "ns_rwset") => match fact(Sel::Int("data_model"))?.int() {
            0 => Within(Ctx::KvNamespace),
            _ => Plain,
        },
        ("rwset.NsReadWriteSet", "rwset") if *ctx == Ctx::KvNamespace => op("kvrwset.KVRWSet"),
        ("rwset.NsReadWriteSet", "collection_hashed_rwset") if *ctx == Ctx::KvNamespace => {
            Within(Ctx::KvCollection)
        }
        ("rwset.CollectionHashedReadWriteSet", "rwset") if *ctx == Ctx::KvCollection => {
            op("kvrwset.HashedRWSet")
        }
        _ => Plain,
    })
}

// ---------------------------------------------------------------------------------------------
// JSON with ordered objects

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Json, E> {
                Ok(Json::Int(i.into()))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Json, E> {
                Ok(Json::Int(u.into()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
                Ok(Json::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Json::Arr(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v: Vec<(String, Json)> = Vec::new();
                let mut seen = HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    let value = a.next_value()?;
                    v.push((k, value));
                }
                Ok(Json::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes `v` as Go's `json.Encoder` with `SetIndent("", "\t")` does (HTML characters escaped).
fn write_json(out: &mut String, v: &Json, level: usize) {
    let indent = |out: &mut String, n: usize| {
        out.push('\n');
        for _ in 0..n {
            out.push('\t');
        }
    };
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(i) => out.push_str(&i.to_string()),
        Json::Float(f) => out.push_str(&f.to_string()),
        Json::Str(s) => write_str(out, s),
        Json::Arr(a) if a.is_empty() => out.push_str("[]"),
        Json::Obj(o) if o.is_empty() => out.push_str("{}"),
        Json::Arr(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write_json(out, x, level + 1);
            }
            indent(out, level);
            out.push(']');
        }
        Json::Obj(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write_str(out, k);
                out.push_str(": ");
                write_json(out, x, level + 1);
            }
            indent(out, level);
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(HEX[b >> 4] as char);
                out.push(HEX[b & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Wire format

#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    I32(u32),
}

fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err("varint overflows 64 bits".into());
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= b.len())
        .ok_or("truncated field")?;
    let s = &b[*pos..end];
    *pos = end;
    Ok(s)
}

fn parse_wire(b: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = read_varint(b, &mut pos)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n != 0 && *n < (1 << 29))
            .ok_or_else(|| format!("invalid field number {}", key >> 3))?;
        let raw = match key & 7 {
            0 => Raw::Varint(read_varint(b, &mut pos)?),
            1 => {
                let s = take(b, &mut pos, 8)?;
                Raw::I64(u64::from_le_bytes(s.try_into().map_err(|_| "truncated")?))
            }
            2 => {
                let n = usize::try_from(read_varint(b, &mut pos)?).map_err(|_| "huge length")?;
                Raw::Len(take(b, &mut pos, n)?)
            }
            5 => {
                let s = take(b, &mut pos, 4)?;
                Raw::I32(u32::from_le_bytes(s.try_into().map_err(|_| "truncated")?))
            }
            w => return Err(format!("field {number}: unsupported wire type {w}")),
        };
        out.push((number, raw));
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

fn put_len(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_tag(out, number, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The last Len occurrence of field `number` in a raw message, or every occurrence joined (a
/// message field given more than once is their merge).
fn raw_message<'a>(fields: &[(u32, Raw<'a>)], number: u32) -> Option<Vec<u8>> {
    let mut found = None::<Vec<u8>>;
    for (n, r) in fields {
        if *n == number
            && let Raw::Len(b) = r
        {
            found.get_or_insert_with(Vec::new).extend_from_slice(b);
        }
    }
    found
}

fn last_varint(fields: &[(u32, Raw<'_>)], number: u32) -> Option<u64> {
    fields.iter().rev().find_map(|(n, r)| match r {
        Raw::Varint(v) if *n == number => Some(*v),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Timestamps (RFC 3339, as protojson)

const MIN_TIMESTAMP: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const MAX_TIMESTAMP: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn format_timestamp(secs: i64, nanos: i64) -> Result<String, String> {
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&secs) || !(0..1_000_000_000).contains(&nanos) {
        return Err(format!(
            "invalid google.protobuf.Timestamp value {{seconds: {secs}, nanos: {nanos}}}"
        ));
    }
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        r / 3600,
        r % 3600 / 60,
        r % 60
    );
    if nanos != 0 {
        if nanos % 1_000_000 == 0 {
            s.push_str(&format!(".{:03}", nanos / 1_000_000));
        } else if nanos % 1000 == 0 {
            s.push_str(&format!(".{:06}", nanos / 1000));
        } else {
            s.push_str(&format!(".{nanos:09}"));
        }
    }
    s.push('Z');
    Ok(s)
}

fn parse_timestamp(s: &str) -> Result<(i64, i32), String> {
    let bad = || format!("invalid google.protobuf.Timestamp value {s:?}");
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = s.get(from..from + len).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (y, mo, d, h, mi, se) = (
        num(0, 4)?,
        num(5, 2)?,
        num(8, 2)?,
        num(11, 2)?,
        num(14, 2)?,
        num(17, 2)?,
    );
    let mut pos = 19;
    let mut nanos: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = pos - start;
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        nanos = num(start, digits)? * 10_i64.pow(9 - digits as u32);
    }
    let offset = match b.get(pos) {
        Some(b'Z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let o = num(pos + 1, 2)? * 3600 + num(pos + 4, 2)? * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return Err(bad()),
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || se > 59
    {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&secs) {
        return Err(bad());
    }
    Ok((secs, nanos as i32))
}

const TIMESTAMP: &str = "google.protobuf.Timestamp";

fn unsupported_wkt(t: &str) -> bool {
    t.starts_with("google.protobuf.") && t != TIMESTAMP && t != "google.protobuf.Empty"
}

// ---------------------------------------------------------------------------------------------
// The conversions

struct Walker<'s> {
    schema: &'s Schema,
    path: Vec<String>,
    depth: usize,
    messages: usize,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let url = s.contains(['-', '_']);
    let padded = s.len().is_multiple_of(4);
    let engine = match (url, padded) {
        (false, true) => &STANDARD,
        (false, false) => &STANDARD_NO_PAD,
        (true, true) => &URL_SAFE,
        (true, false) => &URL_SAFE_NO_PAD,
    };
    engine
        .decode(s)
        .map_err(|e| format!("not base64 ({e}): {}", snippet(s)))
}

fn snippet(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

fn describe(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Int(_) | Json::Float(_) => "a number",
        Json::Str(_) => "a string",
        Json::Arr(_) => "an array",
        Json::Obj(_) => "an object",
    }
}

fn zigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl<'s> Walker<'s> {
    fn new(schema: &'s Schema) -> Self {
        Self {
            schema,
            path: Vec::new(),
            depth: 0,
            messages: 0,
        }
    }

    fn path(&self) -> String {
        if self.path.is_empty() {
            return "the top".into();
        }
        let mut s = String::new();
        for seg in &self.path {
            if !seg.starts_with('[') && !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
        s
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        self.messages += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("messages nest deeper than {MAX_DEPTH}"));
        }
        if self.messages > MAX_MESSAGES {
            return Err(format!("more than {MAX_MESSAGES} messages"));
        }
        Ok(())
    }

    // ----- protobuf → JSON

    fn decode_message(&mut self, ty: &str, ctx: &Ctx, bytes: &[u8]) -> Result<Json, String> {
        self.enter()?;
        let r = self.decode_message_inner(ty, ctx, bytes);
        self.depth -= 1;
        r
    }

    fn decode_message_inner(&mut self, ty: &str, ctx: &Ctx, bytes: &[u8]) -> Result<Json, String> {
        if unsupported_wkt(ty) {
            return Err(format!("{ty} is not supported"));
        }
        let schema = self.schema;
        let mt = schema.message(ty)?;
        let raw = parse_wire(bytes)?;
        let mut occ: Vec<Vec<Raw>> = vec![Vec::new(); mt.fields.len()];
        for (n, r) in &raw {
            let i = mt.by_number(*n).ok_or_else(|| {
                format!("field number {n} is not a field of {ty} (refused rather than dropped)")
            })?;
            occ[i].push(*r);
        }
        let mut fact = |sel: Sel| decode_fact(schema, mt, &raw, sel);
        let mut out = Vec::with_capacity(mt.fields.len());
        for (f, occ) in mt.fields.iter().zip(&occ) {
            self.path.push(f.name.clone());
            let v = self.decode_field(ty, ctx, f, occ, &mut fact)?;
            self.path.pop();
            if let Some(v) = v {
                out.push((f.name.clone(), v));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Json::Obj(out))
    }

    fn decode_field(
        &mut self,
        ty: &str,
        ctx: &Ctx,
        f: &Field,
        occ: &[Raw],
        fact: &mut dyn FnMut(Sel) -> Result<Fact, String>,
    ) -> Result<Option<Json>, String> {
        if f.map {
            let Kind::Message(entry_type) = &f.kind else {
                return Err("map without entry type".into());
            };
            let entry = self.schema.message(entry_type)?;
            let (Some(kf), Some(vf)) = (
                entry.by_number(1).map(|i| &entry.fields[i]),
                entry.by_number(2).map(|i| &entry.fields[i]),
            ) else {
                return Err(format!("{entry_type} is not a map entry"));
            };
            let mut entries: Vec<(String, Json)> = Vec::new();
            for r in occ {
                let Raw::Len(b) = r else {
                    return Err("a map entry is not length-delimited".into());
                };
                let fields = parse_wire(b)?;
                let mut key_occ = Vec::new();
                let mut val_occ = Vec::new();
                for (n, r) in fields {
                    match n {
                        1 => key_occ.push(r),
                        2 => val_occ.push(r),
                        n => return Err(format!("map entry with field number {n}")),
                    }
                }
                let key = match self.decode_single(kf, &key_occ)? {
                    Json::Str(s) => s,
                    Json::Int(i) => i.to_string(),
                    Json::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported map key {other:?}")),
                };
                self.path.push(format!("[{key:?}]"));
                let value = match &vf.kind {
                    Kind::Message(t) => {
                        let mut bytes = Vec::new();
                        for r in &val_occ {
                            if let Raw::Len(b) = r {
                                bytes.extend_from_slice(b);
                            } else {
                                return Err("a message is not length-delimited".into());
                            }
                        }
                        let sp = special(ty, ctx, &f.name, &key, fact)?;
                        self.decode_embedded(t, sp, &bytes)?
                    }
                    Kind::Scalar(Scalar::Bytes) if !val_occ.is_empty() => {
                        match special(ty, ctx, &f.name, &key, fact)? {
                            Special::Opaque(t, c) => {
                                let Some(Raw::Len(b)) = val_occ.last() else {
                                    return Err("bytes are not length-delimited".into());
                                };
                                self.decode_message(t, &c, b)?
                            }
                            _ => self.decode_single(vf, &val_occ)?,
                        }
                    }
                    _ => self.decode_single(vf, &val_occ)?,
                };
                self.path.pop();
                match entries.iter_mut().find(|(k, _)| *k == key) {
                    Some(e) => e.1 = value,
                    None => entries.push((key, value)),
                }
            }
            return Ok(Some(Json::Obj(entries)));
        }
        if f.repeated {
            let mut items = Vec::new();
            for r in occ {
                match (&f.kind, r) {
                    (Kind::Message(t), Raw::Len(b)) => {
                        self.path.push(format!("[{}]", items.len()));
                        let sp = special(ty, ctx, &f.name, "", fact)?;
                        items.push(self.decode_embedded(t, sp, b)?);
                        self.path.pop();
                    }
                    (Kind::Scalar(Scalar::Bytes), Raw::Len(b)) => {
                        self.path.push(format!("[{}]", items.len()));
                        let v = match special(ty, ctx, &f.name, "", fact)? {
                            Special::Opaque(t, c) => self.decode_message(t, &c, b)?,
                            _ => Json::Str(b64(b)),
                        };
                        items.push(v);
                        self.path.pop();
                    }
                    (Kind::Scalar(Scalar::String), Raw::Len(_)) => {
                        items.push(self.decode_scalar(f, *r)?)
                    }
                    (_, Raw::Len(b)) => {
                        // Packed scalars.
                        let wire = match &f.kind {
                            Kind::Scalar(Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64) => 1,
                            Kind::Scalar(Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32) => 5,
                            _ => 0,
                        };
                        let mut pos = 0;
                        while pos < b.len() {
                            let r = match wire {
                                1 => Raw::I64(u64::from_le_bytes(
                                    take(b, &mut pos, 8)?.try_into().map_err(|_| "truncated")?,
                                )),
                                5 => Raw::I32(u32::from_le_bytes(
                                    take(b, &mut pos, 4)?.try_into().map_err(|_| "truncated")?,
                                )),
                                _ => Raw::Varint(read_varint(b, &mut pos)?),
                            };
                            items.push(self.decode_scalar(f, r)?);
                        }
                    }
                    (_, r) => items.push(self.decode_scalar(f, *r)?),
                }
            }
            return Ok(Some(Json::Arr(items)));
        }
        if occ.is_empty() {
            if f.oneof.is_some() {
                return Ok(None);
            }
            return Ok(Some(match &f.kind {
                Kind::Message(_) => Json::Null,
                Kind::Scalar(Scalar::Bytes) => {
                    // An opaque field protolator expands is null when unset; plain bytes are "".
                    let opaque = !matches!(
                        special(ty, ctx, &f.name, "", &mut |_| Ok(Fact::Int(0))),
                        Ok(Special::Plain)
                    );
                    if opaque {
                        Json::Null
                    } else {
                        Json::Str(String::new())
                    }
                }
                _ => self.decode_single(f, &[])?,
            }));
        }
        match &f.kind {
            Kind::Message(t) => {
                let mut bytes = Vec::new();
                for r in occ {
                    let Raw::Len(b) = r else {
                        return Err("a message is not length-delimited".into());
                    };
                    bytes.extend_from_slice(b);
                }
                let sp = special(ty, ctx, &f.name, "", fact)?;
                Ok(Some(self.decode_embedded(t, sp, &bytes)?))
            }
            Kind::Scalar(Scalar::Bytes) => match special(ty, ctx, &f.name, "", fact)? {
                Special::Opaque(t, c) => {
                    let Some(Raw::Len(b)) = occ.last() else {
                        return Err("bytes are not length-delimited".into());
                    };
                    Ok(Some(self.decode_message(t, &c, b)?))
                }
                _ => Ok(Some(self.decode_single(f, occ)?)),
            },
            _ => Ok(Some(self.decode_single(f, occ)?)),
        }
    }

    /// A message-typed value: a timestamp, or a message in the context `sp` gives it.
    fn decode_embedded(&mut self, t: &str, sp: Special, bytes: &[u8]) -> Result<Json, String> {
        if t == TIMESTAMP {
            let fields = parse_wire(bytes)?;
            let secs = last_varint(&fields, 1).unwrap_or(0) as i64;
            let nanos = last_varint(&fields, 2).unwrap_or(0) as i32;
            if let Some((n, _)) = fields.iter().find(|(n, _)| *n > 2) {
                return Err(format!("field number {n} is not a field of {TIMESTAMP}"));
            }
            return format_timestamp(secs, i64::from(nanos)).map(Json::Str);
        }
        let ctx = match sp {
            Special::Within(c) => c,
            _ => Ctx::None,
        };
        self.decode_message(t, &ctx, bytes)
    }

    /// A singular scalar from its occurrences (the last one counts), or its default.
    fn decode_single(&mut self, f: &Field, occ: &[Raw]) -> Result<Json, String> {
        match occ.last() {
            Some(r) => self.decode_scalar(f, *r),
            None => Ok(match &f.kind {
                Kind::Scalar(Scalar::String | Scalar::Bytes) => Json::Str(String::new()),
                Kind::Scalar(Scalar::Bool) => Json::Bool(false),
                Kind::Scalar(
                    Scalar::Int64
                    | Scalar::Uint64
                    | Scalar::Sint64
                    | Scalar::Fixed64
                    | Scalar::Sfixed64,
                ) => Json::Str("0".into()),
                Kind::Scalar(_) => Json::Int(0),
                Kind::Enum(e) => match self.schema.enum_name(e, 0) {
                    Some(n) => Json::Str(n.to_owned()),
                    None => Json::Int(0),
                },
                Kind::Message(_) => Json::Null,
            }),
        }
    }

    fn decode_scalar(&mut self, f: &Field, r: Raw) -> Result<Json, String> {
        let mismatch = || format!("wire type does not match the field's type {:?}", f.kind);
        Ok(match (&f.kind, r) {
            (Kind::Enum(e), Raw::Varint(v)) => match self.schema.enum_name(e, v as i32) {
                Some(n) => Json::Str(n.to_owned()),
                None => Json::Int(i128::from(v as i32)),
            },
            (Kind::Scalar(s), r) => match (s, r) {
                (Scalar::Int32, Raw::Varint(v)) => Json::Int(i128::from(v as i32)),
                (Scalar::Uint32, Raw::Varint(v)) => Json::Int(i128::from(v as u32)),
                (Scalar::Sint32, Raw::Varint(v)) => Json::Int(i128::from(zigzag32(v as u32))),
                (Scalar::Int64, Raw::Varint(v)) => Json::Str((v as i64).to_string()),
                (Scalar::Uint64, Raw::Varint(v)) => Json::Str(v.to_string()),
                (Scalar::Sint64, Raw::Varint(v)) => Json::Str(zigzag64(v).to_string()),
                (Scalar::Bool, Raw::Varint(v)) => Json::Bool(v != 0),
                (Scalar::Fixed32, Raw::I32(v)) => Json::Int(i128::from(v)),
                (Scalar::Sfixed32, Raw::I32(v)) => Json::Int(i128::from(v as i32)),
                (Scalar::Float, Raw::I32(v)) => float_json(f64::from(f32::from_bits(v))),
                (Scalar::Fixed64, Raw::I64(v)) => Json::Str(v.to_string()),
                (Scalar::Sfixed64, Raw::I64(v)) => Json::Str((v as i64).to_string()),
                (Scalar::Double, Raw::I64(v)) => float_json(f64::from_bits(v)),
                (Scalar::String, Raw::Len(b)) => Json::Str(
                    std::str::from_utf8(b)
                        .map_err(|_| "a string field holds invalid UTF-8".to_owned())?
                        .to_owned(),
                ),
                (Scalar::Bytes, Raw::Len(b)) => Json::Str(b64(b)),
                _ => return Err(mismatch()),
            },
            _ => return Err(mismatch()),
        })
    }

    // ----- JSON → protobuf

    fn encode_message(
        &mut self,
        ty: &str,
        ctx: &Ctx,
        json: &Json,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.enter()?;
        let r = self.encode_message_inner(ty, ctx, json, out);
        self.depth -= 1;
        r
    }

    fn encode_message_inner(
        &mut self,
        ty: &str,
        ctx: &Ctx,
        json: &Json,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if unsupported_wkt(ty) {
            return Err(format!("{ty} is not supported"));
        }
        let schema = self.schema;
        let mt = schema.message(ty)?;
        let Json::Obj(obj) = json else {
            return Err(format!(
                "expected an object for {ty}, got {}",
                describe(json)
            ));
        };
        let mut values: Vec<Option<&Json>> = vec![None; mt.fields.len()];
        for (k, v) in obj {
            let i = mt
                .by_name(k)
                .ok_or_else(|| format!("unknown field {k:?} in {ty}"))?;
            if values[i].is_some() {
                return Err(format!("field {k:?} given twice in {ty}"));
            }
            values[i] = Some(v);
        }
        let mut oneofs = HashMap::new();
        for (f, v) in mt.fields.iter().zip(&values) {
            if let (Some(o), Some(v)) = (f.oneof, v)
                && **v != Json::Null
                && let Some(other) = oneofs.insert(o, &f.name)
            {
                return Err(format!("{other} and {} are members of one oneof", f.name));
            }
        }
        let mut fact = |sel: Sel| encode_fact(schema, mt, &values, sel);
        for (f, v) in mt.fields.iter().zip(&values) {
            let Some(v) = v else { continue };
            if **v == Json::Null {
                continue;
            }
            self.path.push(f.name.clone());
            self.encode_field(ty, ctx, f, v, out, &mut fact)?;
            self.path.pop();
        }
        Ok(())
    }

    fn encode_field(
        &mut self,
        ty: &str,
        ctx: &Ctx,
        f: &Field,
        v: &Json,
        out: &mut Vec<u8>,
        fact: &mut dyn FnMut(Sel) -> Result<Fact, String>,
    ) -> Result<(), String> {
        if f.map {
            let Json::Obj(entries) = v else {
                return Err(format!("expected an object, got {}", describe(v)));
            };
            let Kind::Message(entry_type) = &f.kind else {
                return Err("map without entry type".into());
            };
            let entry = self.schema.message(entry_type)?;
            let (Some(kf), Some(vf)) = (
                entry.by_number(1).map(|i| &entry.fields[i]),
                entry.by_number(2).map(|i| &entry.fields[i]),
            ) else {
                return Err(format!("{entry_type} is not a map entry"));
            };
            for (k, val) in entries {
                self.path.push(format!("[{k:?}]"));
                let mut e = Vec::new();
                let key_json = match &kf.kind {
                    Kind::Scalar(Scalar::String) => Json::Str(k.clone()),
                    Kind::Scalar(Scalar::Bool) => match k.as_str() {
                        "true" => Json::Bool(true),
                        "false" => Json::Bool(false),
                        _ => return Err(format!("map key {k:?} is not a boolean")),
                    },
                    _ => Json::Str(k.clone()),
                };
                self.encode_scalar(kf, &key_json, &mut e, true)?;
                if *val == Json::Null {
                    return Err("a map value cannot be null".into());
                }
                match &vf.kind {
                    Kind::Message(t) => {
                        let sp = special(ty, ctx, &f.name, k, fact)?;
                        let mut m = Vec::new();
                        self.encode_embedded(t, sp, val, &mut m)?;
                        if !m.is_empty() {
                            put_len(&mut e, vf.number, &m);
                        }
                    }
                    Kind::Scalar(Scalar::Bytes) => match special(ty, ctx, &f.name, k, fact)? {
                        Special::Opaque(t, c) => {
                            let mut m = Vec::new();
                            self.encode_message(t, &c, val, &mut m)?;
                            if !m.is_empty() {
                                put_len(&mut e, vf.number, &m);
                            }
                        }
                        _ => self.encode_scalar(vf, val, &mut e, true)?,
                    },
                    _ => self.encode_scalar(vf, val, &mut e, true)?,
                }
                put_len(out, f.number, &e);
                self.path.pop();
            }
            return Ok(());
        }
        if f.repeated {
            let Json::Arr(items) = v else {
                return Err(format!("expected an array, got {}", describe(v)));
            };
            if f.packed {
                let mut packed = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    self.path.push(format!("[{i}]"));
                    self.encode_packed(f, item, &mut packed)?;
                    self.path.pop();
                }
                if !packed.is_empty() {
                    put_len(out, f.number, &packed);
                }
                return Ok(());
            }
            for (i, item) in items.iter().enumerate() {
                self.path.push(format!("[{i}]"));
                if *item == Json::Null {
                    return Err("an array element cannot be null".into());
                }
                match &f.kind {
                    Kind::Message(t) => {
                        let sp = special(ty, ctx, &f.name, "", fact)?;
                        let mut m = Vec::new();
                        self.encode_embedded(t, sp, item, &mut m)?;
                        put_len(out, f.number, &m);
                    }
                    Kind::Scalar(Scalar::Bytes) => match special(ty, ctx, &f.name, "", fact)? {
                        Special::Opaque(t, c) => {
                            let mut m = Vec::new();
                            self.encode_message(t, &c, item, &mut m)?;
                            put_len(out, f.number, &m);
                        }
                        _ => self.encode_scalar(f, item, out, false)?,
                    },
                    _ => self.encode_scalar(f, item, out, false)?,
                }
                self.path.pop();
            }
            return Ok(());
        }
        match &f.kind {
            Kind::Message(t) => {
                let sp = special(ty, ctx, &f.name, "", fact)?;
                let mut m = Vec::new();
                self.encode_embedded(t, sp, v, &mut m)?;
                put_len(out, f.number, &m);
                Ok(())
            }
            Kind::Scalar(Scalar::Bytes) => match special(ty, ctx, &f.name, "", fact)? {
                Special::Opaque(t, c) => {
                    let mut m = Vec::new();
                    self.encode_message(t, &c, v, &mut m)?;
                    if !m.is_empty() || f.oneof.is_some() {
                        put_len(out, f.number, &m);
                    }
                    Ok(())
                }
                _ => self.encode_scalar(f, v, out, f.oneof.is_none()),
            },
            _ => self.encode_scalar(f, v, out, f.oneof.is_none()),
        }
    }

    fn encode_embedded(
        &mut self,
        t: &str,
        sp: Special,
        v: &Json,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if t == TIMESTAMP {
            let Json::Str(s) = v else {
                return Err(format!(
                    "expected an RFC 3339 timestamp string, got {}",
                    describe(v)
                ));
            };
            let (secs, nanos) = parse_timestamp(s)?;
            if secs != 0 {
                put_tag(out, 1, 0);
                put_varint(out, secs as u64);
            }
            if nanos != 0 {
                put_tag(out, 2, 0);
                put_varint(out, i64::from(nanos) as u64);
            }
            return Ok(());
        }
        let ctx = match sp {
            Special::Within(c) => c,
            _ => Ctx::None,
        };
        self.encode_message(t, &ctx, v, out)
    }

    /// One scalar field with its tag; a default value is left out when `skip_default`.
    fn encode_scalar(
        &mut self,
        f: &Field,
        v: &Json,
        out: &mut Vec<u8>,
        skip_default: bool,
    ) -> Result<(), String> {
        match &f.kind {
            Kind::Scalar(Scalar::String) => {
                let Json::Str(s) = v else {
                    return Err(format!("expected a string, got {}", describe(v)));
                };
                if !(skip_default && s.is_empty()) {
                    put_len(out, f.number, s.as_bytes());
                }
            }
            Kind::Scalar(Scalar::Bytes) => {
                let Json::Str(s) = v else {
                    return Err(format!("expected base64 bytes, got {}", describe(v)));
                };
                let b = unb64(s)?;
                if !(skip_default && b.is_empty()) {
                    put_len(out, f.number, &b);
                }
            }
            _ => {
                let mut body = Vec::new();
                let wire = self.encode_number(f, v, &mut body)?;
                if !(skip_default && body.iter().all(|b| *b == 0)) {
                    put_tag(out, f.number, wire);
                    out.extend_from_slice(&body);
                }
            }
        }
        Ok(())
    }

    fn encode_packed(&mut self, f: &Field, v: &Json, out: &mut Vec<u8>) -> Result<(), String> {
        self.encode_number(f, v, out).map(|_| ())
    }

    /// A numeric, boolean or enum value without its tag; returns its wire type. A zero value
    /// encodes to only zero bytes, so callers can tell it apart.
    fn encode_number(&mut self, f: &Field, v: &Json, out: &mut Vec<u8>) -> Result<u8, String> {
        let int = |lo: i128, hi: i128| -> Result<i128, String> {
            let n = match v {
                Json::Int(i) => *i,
                Json::Float(x) if x.fract() == 0.0 && x.abs() < 1e19 => *x as i128,
                Json::Str(s) => s
                    .trim()
                    .parse::<i128>()
                    .map_err(|_| format!("expected an integer, got {}", snippet(s)))?,
                other => return Err(format!("expected an integer, got {}", describe(other))),
            };
            if n < lo || n > hi {
                return Err(format!("{n} is out of range"));
            }
            Ok(n)
        };
        let float = || -> Result<f64, String> {
            match v {
                Json::Int(i) => Ok(*i as f64),
                Json::Float(x) => Ok(*x),
                Json::Str(s) => match s.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    s => s
                        .parse()
                        .map_err(|_| format!("expected a number, got {s:?}")),
                },
                other => Err(format!("expected a number, got {}", describe(other))),
            }
        };
        let i32r = (i128::from(i32::MIN), i128::from(i32::MAX));
        let i64r = (i128::from(i64::MIN), i128::from(i64::MAX));
        let u32r = (0, i128::from(u32::MAX));
        let u64r = (0, i128::from(u64::MAX));
        match &f.kind {
            Kind::Enum(e) => {
                let n = match v {
                    Json::Str(s) => match self.schema.enum_number(e, s) {
                        Some(n) => n,
                        None => i32::try_from(int(i32r.0, i32r.1)?)
                            .map_err(|_| format!("{s:?} is not a value of {e}"))?,
                    },
                    _ => int(i32r.0, i32r.1)? as i32,
                };
                put_varint(out, i64::from(n) as u64);
                Ok(0)
            }
            Kind::Scalar(s) => match s {
                Scalar::Bool => {
                    let Json::Bool(b) = v else {
                        return Err(format!("expected true or false, got {}", describe(v)));
                    };
                    put_varint(out, u64::from(*b));
                    Ok(0)
                }
                Scalar::Int32 => {
                    put_varint(out, int(i32r.0, i32r.1)? as i64 as u64);
                    Ok(0)
                }
                Scalar::Int64 => {
                    put_varint(out, int(i64r.0, i64r.1)? as i64 as u64);
                    Ok(0)
                }
                Scalar::Uint32 | Scalar::Uint64 => {
                    let (lo, hi) = if *s == Scalar::Uint32 { u32r } else { u64r };
                    put_varint(out, int(lo, hi)? as u64);
                    Ok(0)
                }
                Scalar::Sint32 => {
                    let n = int(i32r.0, i32r.1)? as i32;
                    put_varint(out, u64::from(((n << 1) ^ (n >> 31)) as u32));
                    Ok(0)
                }
                Scalar::Sint64 => {
                    let n = int(i64r.0, i64r.1)? as i64;
                    put_varint(out, ((n << 1) ^ (n >> 63)) as u64);
                    Ok(0)
                }
                Scalar::Fixed32 => {
                    out.extend_from_slice(&(int(u32r.0, u32r.1)? as u32).to_le_bytes());
                    Ok(5)
                }
                Scalar::Sfixed32 => {
                    out.extend_from_slice(&(int(i32r.0, i32r.1)? as i32).to_le_bytes());
                    Ok(5)
                }
                Scalar::Fixed64 => {
                    out.extend_from_slice(&(int(u64r.0, u64r.1)? as u64).to_le_bytes());
                    Ok(1)
                }
                Scalar::Sfixed64 => {
                    out.extend_from_slice(&(int(i64r.0, i64r.1)? as i64).to_le_bytes());
                    Ok(1)
                }
                Scalar::Float => {
                    out.extend_from_slice(&(float()? as f32).to_le_bytes());
                    Ok(5)
                }
                Scalar::Double => {
                    out.extend_from_slice(&float()?.to_le_bytes());
                    Ok(1)
                }
                Scalar::String | Scalar::Bytes => Err("not a number field".into()),
            },
            Kind::Message(_) => Err("not a number field".into()),
        }
    }
}

fn float_json(f: f64) -> Json {
    if f.is_nan() {
        Json::Str("NaN".into())
    } else if f.is_infinite() {
        Json::Str(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Json::Float(f)
    }
}

/// A sibling value, read from the wire.
fn decode_fact(
    schema: &Schema,
    mt: &MessageType,
    raw: &[(u32, Raw)],
    sel: Sel,
) -> Result<Fact, String> {
    let number = |name: &str| {
        mt.by_name(name)
            .map(|i| mt.fields[i].number)
            .ok_or_else(|| format!("no field {name}"))
    };
    match sel {
        Sel::Int(name) => Ok(Fact::Int(
            last_varint(raw, number(name)?).map_or(0, |v| i64::from(v as i32)),
        )),
        Sel::Text(name) => {
            let n = number(name)?;
            let text = raw
                .iter()
                .rev()
                .find_map(|(m, r)| match r {
                    Raw::Len(b) if *m == n => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Fact::Text(text))
        }
        Sel::PayloadType => {
            let header = raw_message(raw, number("header")?)
                .ok_or("cannot determine payload type when header is missing")?;
            let corrupt = |e: String| format!("corrupt channel header: {e}");
            let header = parse_wire(&header).map_err(corrupt)?;
            let ch = header
                .iter()
                .rev()
                .find_map(|(n, r)| match r {
                    Raw::Len(b) if *n == 1 => Some(*b),
                    _ => None,
                })
                .unwrap_or_default();
            let ch = parse_wire(ch).map_err(corrupt)?;
            let _ = schema;
            Ok(Fact::Int(
                last_varint(&ch, 1).map_or(0, |v| i64::from(v as i32)),
            ))
        }
    }
}

/// A sibling value, read from the JSON.
fn encode_fact(
    schema: &Schema,
    mt: &MessageType,
    values: &[Option<&Json>],
    sel: Sel,
) -> Result<Fact, String> {
    fn field<'j>(obj: &'j Json, name: &str, json_name: &str) -> Option<&'j Json> {
        match obj {
            Json::Obj(o) => o
                .iter()
                .find(|(k, _)| k == name || k == json_name)
                .map(|(_, v)| v),
            _ => None,
        }
    }
    fn as_int(v: Option<&Json>, enum_type: Option<(&Schema, &str)>) -> Result<i64, String> {
        match v {
            None | Some(Json::Null) => Ok(0),
            Some(Json::Int(i)) => i64::try_from(*i).map_err(|_| "out of range".to_owned()),
            Some(Json::Str(s)) => match enum_type.and_then(|(sc, e)| sc.enum_number(e, s)) {
                Some(n) => Ok(i64::from(n)),
                None => s
                    .parse()
                    .map_err(|_| format!("{s:?} is not a number or known name")),
            },
            Some(other) => Err(format!("expected a number, got {}", describe(other))),
        }
    }
    let get = |name: &str| -> Result<(&Field, Option<&Json>), String> {
        let i = mt.by_name(name).ok_or_else(|| format!("no field {name}"))?;
        Ok((&mt.fields[i], values[i]))
    };
    match sel {
        Sel::Int(name) => {
            let (f, v) = get(name)?;
            let e = match &f.kind {
                Kind::Enum(e) => Some((schema, e.as_str())),
                _ => None,
            };
            Ok(Fact::Int(as_int(v, e)?))
        }
        Sel::Text(name) => match get(name)?.1 {
            Some(Json::Str(s)) => Ok(Fact::Text(s.clone())),
            _ => Ok(Fact::Text(String::new())),
        },
        Sel::PayloadType => {
            let header = match get("header")?.1 {
                None | Some(Json::Null) => {
                    return Err("cannot determine payload type when header is missing".into());
                }
                Some(h) => h,
            };
            let ch = field(header, "channel_header", "channelHeader");
            let t = match ch {
                None | Some(Json::Null) => None,
                Some(ch) => field(ch, "type", "type"),
            };
            Ok(Fact::Int(
                as_int(t, None).map_err(|e| format!("channel header type: {e}"))?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configjson_timestamps_round_trip() {
        for (secs, nanos, text) in [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_555_875_342, 0, "2019-04-21T19:35:42Z"),
            (1_555_875_342, 10_000_000, "2019-04-21T19:35:42.010Z"),
            (1_555_875_342, 1_000, "2019-04-21T19:35:42.000001Z"),
            (1_555_875_342, 1, "2019-04-21T19:35:42.000000001Z"),
            (MIN_TIMESTAMP, 0, "0001-01-01T00:00:00Z"),
            (MAX_TIMESTAMP, 0, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(format_timestamp(secs, nanos).as_deref(), Ok(text));
            assert_eq!(parse_timestamp(text), Ok((secs, nanos as i32)));
        }
        assert_eq!(
            parse_timestamp("2019-04-21T21:35:42+02:00"),
            Ok((1_555_875_342, 0))
        );
        for bad in ["", "2019-02-30T00:00:00Z", "2019-04-21 19:35:42Z", "x"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
        assert!(format_timestamp(MAX_TIMESTAMP + 1, 0).is_err());
    }

    #[test]
    fn configjson_strings_are_escaped_as_go_does() {
        let mut s = String::new();
        write_str(&mut s, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
    }

    #[test]
    fn configjson_garbage_is_an_error_not_a_panic() {
        for t in ["common.Block", "common.Envelope", "common.Config"] {
            for bytes in [&[0xff_u8][..], &[0x0a, 0x05, 1], &[0x08], &[0x0b, 0x0c]] {
                assert!(proto_decode(t, bytes).is_err(), "{t} {bytes:?}");
            }
            for json in ["", "[", "{\"nope\": 1}", "{\"a\":1,\"a\":2}", "42"] {
                assert!(proto_encode(t, json.as_bytes()).is_err(), "{t} {json}");
            }
        }
        assert!(matches!(
            proto_decode("common.Nope", &[]),
            Err(ConfigJsonError::UnknownType(_))
        ));
    }
}
