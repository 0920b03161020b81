//! One handler per page. Each asks the peer as the explorer's identity and renders what came
//! back, escaped; a refusal by the chaincode or the peer is shown as a refusal (and logged),
//! never as an empty page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::StreamExt;
use medledger_medical_chaincode::certificates::Verification;
use medledger_medical_chaincode::records::{AccessEntry, Provenance, RecordEntry, RecordPage};
use medledger_medical_chaincode::sharing::Consent;
use serde::Deserialize;

use crate::ExplorerError;
use crate::chain::{self, BlockSummary, TxDetail};
use crate::html::{self, Viewer, esc, short, time, time_opt, url_segment};
use crate::web::{AppState, Refusal};

/// Records of one patient listed (and traced for the access log) per page.
pub const PATIENT_PAGE_SIZE: usize = 50;
/// Provenance queries in flight at once for a patient's access log.
const PROVENANCE_CONCURRENCY: usize = 4;
/// How long the channel page waits for the live feed to catch up with the peer's height.
const FEED_CATCH_UP: Duration = Duration::from_secs(2);

type Shared = State<Arc<AppState>>;

/// A page with its status; `refusal` (when set) is what the refusal log says.
pub fn respond(
    viewer: &Viewer,
    status: StatusCode,
    title: &str,
    body: String,
    refusal: Option<String>,
) -> Response {
    let mut r = (status, Html(html::page(title, viewer, &body))).into_response();
    if let Some(reason) = refusal {
        r.extensions_mut().insert(Refusal(reason));
    }
    r
}

fn ok(viewer: &Viewer, title: &str, body: String) -> Response {
    respond(viewer, StatusCode::OK, title, body, None)
}

/// A page saying what was refused or failed, with a status that matches.
fn failure(viewer: &Viewer, title: &str, e: &ExplorerError) -> Response {
    let (status, headline) = match e {
        ExplorerError::Refused(r) => {
            let status = if r.contains("forbidden") || r.contains("access denied") {
                StatusCode::FORBIDDEN
            } else if r.contains("not found") || r.contains("no such") {
                StatusCode::NOT_FOUND
            } else if r.contains("invalid argument") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            };
            (
                status,
                "Refused: the peer does not show this to this identity",
            )
        }
        ExplorerError::Unavailable(_) | ExplorerError::Decode(_) => {
            (StatusCode::BAD_GATEWAY, "The peer could not answer")
        }
        ExplorerError::Setup(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Explorer error"),
    };
    respond(
        viewer,
        status,
        title,
        html::refusal(headline, &e.to_string()),
        Some(e.to_string()),
    )
}

fn bad_input(viewer: &Viewer, title: &str, why: &str) -> Response {
    respond(
        viewer,
        StatusCode::BAD_REQUEST,
        title,
        html::refusal("Not a valid request", why),
        Some(why.to_owned()),
    )
}

/// An id as the chaincode accepts ids (1-64 letters, digits, `-`, `_`, `.`).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// 64 lowercase hex characters (transaction ids, SHA-256 hashes).
fn valid_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn block_link(n: u64) -> String {
    format!("<a href=\"/block/{n}\">{n}</a>")
}

fn tx_link(tx: &str) -> String {
    format!(
        "<a href=\"/tx/{}\"><code title=\"{}\">{}…</code></a>",
        url_segment(tx),
        esc(tx),
        esc(&tx.chars().take(12).collect::<String>())
    )
}

fn who(subject: &str, msp: &str) -> String {
    format!(
        "<span class=\"who\">{}</span> <span class=\"org\">{}</span>",
        esc(&common_name(subject)),
        esc(msp)
    )
}

/// The CN of a subject (`CN=doctor1,OU=client,...` → `doctor1`), or the subject.
fn common_name(subject: &str) -> String {
    subject
        .split(',')
        .find_map(|p| p.trim().strip_prefix("CN="))
        .unwrap_or(subject)
        .to_owned()
}

fn signer_names(s: &AppState, ids: &[u32]) -> String {
    ids.iter()
        .map(|id| {
            let name = s
                .feed
                .consenter(*id)
                .unwrap_or_else(|| format!("consenter {id}"));
            format!(
                "<span class=\"signer\" title=\"{}\">{id}</span>",
                esc(&name)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn block_row(s: &AppState, b: &BlockSummary) -> String {
    format!(
        "<tr data-block=\"{n}\"><td>{link}</td><td>{hash}</td><td>{time}</td><td class=\"num\">{txs}</td>\
         <td>{signers}</td><td>{kind}</td></tr>",
        n = b.number,
        link = block_link(b.number),
        hash = short(&b.hash, 16),
        time = esc(&time_opt(b.time)),
        txs = b.tx_count,
        signers = signer_names(s, &b.signers),
        kind = if b.is_config { "configuration" } else { "" },
    )
}

/// `/`: the channel's height and newest blocks, live.
pub async fn channel(State(s): Shared) -> Response {
    let v = &s.viewer;
    let info = match s.peer.chain_info().await {
        Ok(i) => i,
        Err(e) => return failure(v, "Channel", &e),
    };
    // On a fresh start the feed may still be reading the newest blocks.
    s.feed.wait_height(info.height, FEED_CATCH_UP).await;
    let recent = s.feed.recent();
    let mut rows = String::new();
    for b in &recent {
        rows.push_str(&block_row(&s, b));
    }
    let bars: Vec<(String, u64)> = recent
        .iter()
        .rev()
        .map(|b| (format!("block {}", b.number), b.tx_count as u64))
        .collect();
    let body = format!(
        "<section class=\"facts\"><p>Channel <b>{channel}</b>: height <b id=\"height\">{height}</b>, \
         newest block hash {hash}. Feed: <span id=\"live\">{status}</span>.</p></section>\
         {chart}\
         <h2>Newest blocks</h2><table id=\"blocks\" data-max-rows=\"{max}\"><thead><tr><th>Block</th><th>Hash</th>\
         <th>Time</th><th>Transactions</th><th>Orderer signers</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        channel = esc(&s.peer.channel),
        height = info.height,
        hash = short(&hex::encode(&info.current_block_hash), 16),
        status = esc(&s.feed.status()),
        chart = html::bar_chart("tx-per-block", "Transactions per block", &bars),
        max = crate::feed::MAX_RECENT_BLOCKS,
    );
    ok(v, "Channel", body)
}

/// `/block/{n}`: a block's header facts and its transactions.
pub async fn block(State(s): Shared, Path(number): Path<String>) -> Response {
    let v = &s.viewer;
    let Ok(number) = number.parse::<u64>() else {
        return bad_input(v, "Block", "a block number is a non-negative integer");
    };
    let block = match s.peer.block(number).await {
        Ok(b) => b,
        Err(e) => return failure(v, &format!("Block {number}"), &e),
    };
    let summary = chain::summarize(&block);
    let mut rows = String::new();
    for t in chain::transactions(&block) {
        let class = if t.validation == "VALID" {
            "valid"
        } else {
            "invalid"
        };
        let _ = write!(
            rows,
            "<tr data-tx=\"{txid}\"><td class=\"num\">{i}</td><td>{link}</td><td>{kind}</td><td>{creator}</td>\
             <td>{cc}</td><td>{func}</td><td class=\"{class}\">{code}</td><td>{time}</td></tr>",
            txid = esc(&t.tx_id),
            i = t.index,
            link = if t.tx_id.is_empty() {
                String::new()
            } else {
                tx_link(&t.tx_id)
            },
            kind = esc(&t.kind),
            creator = who(&t.creator.subject, &t.creator.msp),
            cc = esc(&t.chaincode),
            func = esc(&t.function),
            code = esc(&t.validation),
            time = esc(&time_opt(t.time)),
        );
    }
    let previous = number
        .checked_sub(1)
        .map(|p| format!(" (block {})", block_link(p)))
        .unwrap_or_default();
    let body = format!(
        "<dl class=\"facts\"><dt>Hash</dt><dd><code>{hash}</code></dd>\
         <dt>Previous hash</dt><dd><code>{prev}</code>{previous}</dd>\
         <dt>Time</dt><dd>{time}</dd><dt>Transactions</dt><dd>{count} ({valid} valid)</dd>\
         <dt>Orderer signers</dt><dd>{signers}</dd></dl>\
         <h2>Transactions</h2><table id=\"transactions\"><thead><tr><th>#</th><th>Transaction</th><th>Type</th>\
         <th>Creator</th><th>Chaincode</th><th>Function</th><th>Validation</th><th>Time</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        hash = esc(&summary.hash),
        prev = esc(&summary.previous_hash),
        time = esc(&time_opt(summary.time)),
        count = summary.tx_count,
        valid = summary.valid_count,
        signers = signer_names(&s, &summary.signers),
    );
    ok(v, &format!("Block {number}"), body)
}

fn version_text(v: Option<(u64, u64)>) -> String {
    v.map(|(b, t)| format!("block {b}, tx {t}"))
        .unwrap_or_else(|| "none (key absent)".into())
}

fn render_tx(d: &TxDetail, proof_link: bool) -> String {
    let t = &d.summary;
    let mut out = format!(
        "<dl class=\"facts\"><dt>Transaction</dt><dd><code id=\"txid\">{txid}</code></dd>\
         <dt>Block</dt><dd>{block} (position {index})</dd><dt>Type</dt><dd>{kind}</dd>\
         <dt>Creator</dt><dd>{creator} <small>{subject}</small></dd>\
         <dt>Chaincode</dt><dd>{cc}</dd><dt>Function</dt><dd>{func}</dd>\
         <dt>Validation</dt><dd class=\"{class}\" id=\"validation\">{code}</dd><dt>Time</dt><dd>{time}</dd>",
        txid = esc(&t.tx_id),
        block = block_link(d.block),
        index = t.index,
        kind = esc(&t.kind),
        creator = who(&t.creator.subject, &t.creator.msp),
        subject = esc(&t.creator.subject),
        cc = esc(&t.chaincode),
        func = esc(&t.function),
        class = if t.validation == "VALID" {
            "valid"
        } else {
            "invalid"
        },
        code = esc(&t.validation),
        time = esc(&time_opt(t.time)),
    );
    if let Some((status, message)) = &d.response {
        let _ = write!(
            out,
            "<dt>Chaincode response</dt><dd>{status} {}</dd>",
            esc(message)
        );
    }
    out.push_str("</dl>");
    if proof_link {
        let _ = write!(
            out,
            "<p><a class=\"button\" href=\"/tx/{}/proof.json\" download>Export the offline proof of its writes</a> \
             (verify it with <code>medledger-peer proof verify</code> and the channel's genesis block).</p>",
            url_segment(&t.tx_id)
        );
    }
    out.push_str("<h2>Endorsers</h2><ul id=\"endorsers\">");
    for e in &d.endorsers {
        let _ = write!(
            out,
            "<li>{} <small>{}</small></li>",
            who(&e.subject, &e.msp),
            esc(&e.subject)
        );
    }
    out.push_str(
        "</ul><h2>Read/write set</h2><p class=\"note\">Keys and versions only: values are not \
         shown, and private data is in the block only as hashes of its keys and values.</p>",
    );
    for ns in &d.namespaces {
        let _ = write!(
            out,
            "<section class=\"rwset\" data-namespace=\"{n}\"><h3>Namespace {n}</h3>",
            n = esc(&ns.namespace)
        );
        if !ns.reads.is_empty() {
            out.push_str("<table class=\"reads\"><thead><tr><th>Read key</th><th>Version read</th></tr></thead><tbody>");
            for r in &ns.reads {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td></tr>",
                    esc(&r.key),
                    esc(&version_text(r.version))
                );
            }
            out.push_str("</tbody></table>");
        }
        for (start, end) in &ns.ranges {
            let _ = write!(
                out,
                "<p>Range read <code>{}</code> … <code>{}</code></p>",
                esc(start),
                esc(end)
            );
        }
        if !ns.writes.is_empty() {
            out.push_str("<table class=\"writes\"><thead><tr><th>Written key</th><th>Write</th></tr></thead><tbody>");
            for w in &ns.writes {
                let what = if w.is_delete {
                    "delete".to_owned()
                } else {
                    format!("{} bytes", w.value_bytes)
                };
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td></tr>",
                    esc(&w.key),
                    esc(&what)
                );
            }
            out.push_str("</tbody></table>");
        }
        for c in &ns.collections {
            let _ = write!(
                out,
                "<h4>Private collection {}</h4><table class=\"hashed\"><thead><tr><th>Key hash</th><th>Access</th></tr></thead><tbody>",
                esc(&c.collection)
            );
            for (hash, version) in &c.reads {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>read at {}</td></tr>",
                    short(hash, 16),
                    esc(&version_text(*version))
                );
            }
            for (hash, delete, purge) in &c.writes {
                let what = match (delete, purge) {
                    (_, true) => "erased (purged)",
                    (true, false) => "deleted",
                    _ => "written (value hash in the block)",
                };
                let _ = write!(out, "<tr><td>{}</td><td>{what}</td></tr>", short(hash, 16));
            }
            out.push_str("</tbody></table>");
        }
        out.push_str("</section>");
    }
    out
}

/// `/tx/{id}`: a transaction's creator, endorsers and read/write set.
pub async fn transaction(State(s): Shared, Path(tx_id): Path<String>) -> Response {
    let v = &s.viewer;
    if !valid_hex64(&tx_id) {
        return bad_input(
            v,
            "Transaction",
            "a transaction id is 64 lowercase hex characters",
        );
    }
    let block = match s.peer.block_of_tx(&tx_id).await {
        Ok(b) => b,
        Err(e) => return failure(v, "Transaction", &e),
    };
    let Some(detail) = chain::transaction(&block, &tx_id) else {
        return failure(
            v,
            "Transaction",
            &ExplorerError::Decode(format!("the block the peer named does not hold {tx_id}")),
        );
    };
    let provable = detail.summary.chaincode == s.peer.chaincode
        && detail.summary.validation == "VALID"
        && detail.namespaces.iter().any(|n| {
            n.namespace == s.peer.chaincode
                && (!n.writes.is_empty() || n.collections.iter().any(|c| !c.writes.is_empty()))
        });
    ok(v, "Transaction", render_tx(&detail, provable))
}

#[derive(Deserialize)]
pub struct IdQuery {
    id: Option<String>,
}

/// `/record`: asks for a record id.
pub async fn record_form(State(s): Shared, Query(q): Query<IdQuery>) -> Response {
    if let Some(id) = q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        return Redirect::to(&format!("/record/{}", url_segment(id))).into_response();
    }
    ok(
        &s.viewer,
        "Record",
        "<form action=\"/record\" method=\"get\" class=\"ask\"><label>Record id \
         <input name=\"id\" required maxlength=\"64\" pattern=\"[A-Za-z0-9_.\\-]+\"></label>\
         <button>Show its trail</button></form>"
            .into(),
    )
}

fn access_rows(reads: &[AccessEntry], with_record: bool) -> String {
    let mut rows = String::new();
    for r in reads {
        let record = if with_record {
            format!(
                "<td><a href=\"/record/{}\">{}</a></td>",
                url_segment(&r.record_id),
                esc(&r.record_id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr data-reader-msp=\"{msp}\">{record}<td>{when}</td><td>{who}</td><td>{role}</td><td>{msp}</td>\
             <td class=\"purpose\">{purpose}</td><td>{via}</td><td class=\"num\">{version}</td><td>{tx}</td></tr>",
            when = esc(&time(r.at)),
            who = esc(&common_name(&r.reader_subject)),
            role = esc(r.reader_role.as_deref().unwrap_or("—")),
            msp = esc(&r.reader_msp),
            purpose = esc(&r.purpose),
            via = esc(&r.via),
            version = r.version,
            tx = tx_link(&r.tx_id),
        );
    }
    rows
}

fn access_table(reads: &[AccessEntry], with_record: bool) -> String {
    if reads.is_empty() {
        return "<p id=\"accesses\" class=\"empty\">No access has been logged.</p>".into();
    }
    format!(
        "<table id=\"accesses\"><thead><tr>{}<th>When</th><th>Who</th><th>Role</th><th>Organisation</th>\
         <th>Purpose</th><th>Via</th><th>Version</th><th>Transaction</th></tr></thead><tbody>{}</tbody></table>",
        if with_record { "<th>Record</th>" } else { "" },
        access_rows(reads, with_record)
    )
}

/// `/record/{id}`: the record's versions, shares, consents and every access.
pub async fn record(State(s): Shared, Path(id): Path<String>) -> Response {
    let v = &s.viewer;
    let title = format!("Record {id}");
    if !valid_id(&id) {
        return bad_input(
            v,
            "Record",
            "a record id is 1-64 letters, digits, '-', '_' or '.'",
        );
    }
    let p: Provenance = match s.peer.query_json("GetRecordProvenance", &[&id]).await {
        Ok(p) => p,
        Err(e) => return failure(v, &title, &e),
    };
    let entry: Option<RecordEntry> = s.peer.query_json("GetRecord", &[&id]).await.ok();
    let mut body = String::new();
    if let Some(e) = &entry {
        let _ = write!(
            body,
            "<dl class=\"facts\"><dt>Patient</dt><dd><a href=\"/patient/{pl}\">{patient}</a></dd>\
             <dt>Type</dt><dd>{kind}</dd><dt>Custodian</dt><dd>{custodian}</dd>\
             <dt>Current version</dt><dd>{version}</dd><dt>Content commitment</dt><dd>{hash}</dd></dl>",
            pl = url_segment(&e.patient_id),
            patient = esc(&e.patient_id),
            kind = esc(&e.resource_type),
            custodian = esc(&e.custodian),
            version = e.version,
            hash = short(&e.content_hash, 16),
        );
    }
    let _ = write!(
        body,
        "<p><a class=\"button\" id=\"proof-link\" href=\"/record/{}/proof.json\" download>Export the offline proof bundle</a> \
         of every version, share, consent change and access (verify it with <code>medledger-peer proof verify</code> \
         and the channel's genesis block, trusting no peer).</p><h2>Versions</h2><ol class=\"timeline\" id=\"versions\">",
        url_segment(&id)
    );
    for ver in &p.versions {
        let reason = ver
            .amend_reason
            .as_deref()
            .map(|r| format!("<p class=\"reason\">Amended: {}</p>", esc(r)))
            .unwrap_or_else(|| "<p class=\"reason\">Created</p>".into());
        let _ = write!(
            body,
            "<li data-version=\"{n}\"><h3>Version {n}</h3><p>{when} by {who}</p>{reason}\
             <p>Block {block}, transaction {tx}, commitment {hash}</p></li>",
            n = ver.version,
            when = esc(&time(ver.timestamp)),
            who = who(&ver.author_subject, &ver.author_msp),
            block = block_link(ver.block),
            tx = tx_link(&ver.tx_id),
            hash = short(&ver.content_hash, 16),
        );
    }
    body.push_str("</ol><h2>Shares</h2>");
    if p.shares.is_empty() {
        body.push_str("<p id=\"shares\" class=\"empty\">Never shared.</p>");
    } else {
        body.push_str(
            "<table id=\"shares\"><thead><tr><th>With</th><th>Under consent</th><th>Version</th><th>By</th>\
             <th>When</th><th>Block</th><th>Transaction</th></tr></thead><tbody>",
        );
        for sh in &p.shares {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&sh.grantee_msp),
                esc(&sh.consent_id),
                sh.version,
                who(&sh.shared_by_subject, &sh.shared_by_msp),
                esc(&time(sh.timestamp)),
                block_link(sh.block),
                tx_link(&sh.tx_id),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2>Consents it was shared under</h2>");
    if p.consents.is_empty() {
        body.push_str("<p id=\"consents\" class=\"empty\">None.</p>");
    } else {
        body.push_str(
            "<table id=\"consents\"><thead><tr><th>Consent</th><th>Grantee</th><th>Change</th><th>When</th>\
             <th>Block</th><th>Transaction</th></tr></thead><tbody>",
        );
        for c in &p.consents {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.consent_id),
                esc(&c.grantee_msp),
                if c.revoked { "invalid" } else { "valid" },
                if c.revoked {
                    "revoked (shared copies erased)"
                } else {
                    "granted"
                },
                esc(&time(c.timestamp)),
                block_link(c.block),
                tx_link(&c.tx_id),
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<h2>Accesses</h2>{}{}",
        html::bar_chart(
            "accesses-per-day",
            "Accesses per day",
            &html::per_day(p.reads.iter().map(|r| r.at))
        ),
        access_table(&p.reads, false)
    );
    ok(v, &title, body)
}

#[derive(Deserialize)]
pub struct PatientQuery {
    id: Option<String>,
    bookmark: Option<String>,
}

/// `/patient`: the explorer identity's own view when it is a patient; a form otherwise.
pub async fn patient_own(State(s): Shared, Query(q): Query<PatientQuery>) -> Response {
    if let Some(id) = q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        return Redirect::to(&format!("/patient/{}", url_segment(id))).into_response();
    }
    if let Some(own) = s.viewer.patient_id.clone() {
        return patient_page(&s, &own, q.bookmark.unwrap_or_default()).await;
    }
    ok(
        &s.viewer,
        "Patient",
        "<p>This identity has no <code>patientId</code> attribute: name a patient (staff see \
         their records and the consents granted to their organisation).</p>\
         <form action=\"/patient\" method=\"get\" class=\"ask\"><label>Patient id \
         <input name=\"id\" required maxlength=\"64\" pattern=\"[A-Za-z0-9_.\\-]+\"></label>\
         <button>Show</button></form>"
            .into(),
    )
}

/// `/patient/{id}`: a patient's records, consents and the access log across the records.
pub async fn patient(
    State(s): Shared,
    Path(id): Path<String>,
    Query(q): Query<PatientQuery>,
) -> Response {
    patient_page(&s, &id, q.bookmark.unwrap_or_default()).await
}

async fn patient_page(s: &AppState, patient: &str, bookmark: String) -> Response {
    let v = &s.viewer;
    let title = format!("Patient {patient}");
    if !valid_id(patient) {
        return bad_input(
            v,
            "Patient",
            "a patient id is 1-64 letters, digits, '-', '_' or '.'",
        );
    }
    if bookmark.len() > 1024 {
        return bad_input(v, &title, "that bookmark is not one the chaincode gave");
    }
    let size = PATIENT_PAGE_SIZE.to_string();
    let page: RecordPage = match s
        .peer
        .query_json("ListRecordsByPatient", &[patient, &size, &bookmark])
        .await
    {
        Ok(p) => p,
        Err(e) => return failure(v, &title, &e),
    };
    // A patient lists their own consents; staff name the patient (and see their organisation's).
    let own = v.patient_id.as_deref() == Some(patient);
    let consents: Result<Vec<Consent>, ExplorerError> = if own {
        s.peer.query_json("ListConsents", &[]).await
    } else {
        s.peer.query_json("ListConsents", &[patient]).await
    };
    let ids: Vec<String> = page.records.iter().map(|r| r.id.clone()).collect();
    let peer = s.peer.clone();
    let provenances: Vec<(String, Result<Provenance, ExplorerError>)> = futures::stream::iter(ids)
        .map(move |id| {
            let peer = peer.clone();
            async move {
                let p = peer.query_json("GetRecordProvenance", &[&id]).await;
                (id, p)
            }
        })
        .buffered(PROVENANCE_CONCURRENCY)
        .collect()
        .await;

    let mut body = String::from("<h2>Records</h2>");
    if page.records.is_empty() {
        body.push_str("<p id=\"records\" class=\"empty\">No records.</p>");
    } else {
        body.push_str(
            "<table id=\"records\"><thead><tr><th>Record</th><th>Type</th><th>Custodian</th><th>Version</th>\
             <th>Created</th><th>Updated</th></tr></thead><tbody>",
        );
        for r in &page.records {
            let _ = write!(
                body,
                "<tr data-record=\"{id}\"><td><a href=\"/record/{link}\">{id}</a></td><td>{kind}</td><td>{custodian}</td>\
                 <td class=\"num\">{version}</td><td>{created}</td><td>{updated}</td></tr>",
                id = esc(&r.id),
                link = url_segment(&r.id),
                kind = esc(&r.resource_type),
                custodian = esc(&r.custodian),
                version = r.version,
                created = esc(&time(r.created_at)),
                updated = esc(&time(r.updated_at)),
            );
        }
        body.push_str("</tbody></table>");
    }
    if !page.bookmark.is_empty() {
        let _ = write!(
            body,
            "<p><a href=\"/patient/{}?bookmark={}\">Next {} records</a></p>",
            url_segment(patient),
            url_segment(&page.bookmark),
            PATIENT_PAGE_SIZE
        );
    }
    body.push_str("<h2>Consents</h2>");
    match consents {
        Err(e) => body.push_str(&html::refusal("Consents not shown", &e.to_string())),
        Ok(c) if c.is_empty() => {
            body.push_str("<p id=\"consents\" class=\"empty\">No consents.</p>")
        }
        Ok(c) => {
            body.push_str(
                "<table id=\"consents\"><thead><tr><th>Consent</th><th>Grantee</th><th>Role</th><th>Scope</th>\
                 <th>Purpose</th><th>Granted</th><th>Expires</th><th>Status</th><th></th></tr></thead><tbody>",
            );
            let now = medledger_common::msp::unix_now();
            for c in &c {
                let status = if c.revoked {
                    format!("revoked {}", time_opt(c.revoked_at))
                } else if now >= c.expires_at {
                    "expired".into()
                } else {
                    "active".into()
                };
                let scope: Vec<String> = c
                    .scope
                    .record_types
                    .iter()
                    .chain(&c.scope.record_ids)
                    .cloned()
                    .collect();
                // Only the patient's own explorer may revoke, and only what is still active.
                let action = if own && status == "active" {
                    format!(
                        "<form method=\"post\" action=\"/patient/consents/{link}/revoke\" class=\"revoke\">\
                         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                         <button>Revoke</button></form>",
                        link = url_segment(&c.id),
                        token = esc(&s.form_token),
                    )
                } else {
                    String::new()
                };
                let _ = write!(
                    body,
                    "<tr data-consent=\"{id}\"><td>{id}</td><td>{grantee}</td><td>{role}</td><td>{scope}</td>\
                     <td>{purpose}</td><td>{granted} {tx}</td><td>{expires}</td><td class=\"{class}\">{status}</td>\
                     <td>{action}</td></tr>",
                    id = esc(&c.id),
                    grantee = esc(&c.grantee_msp),
                    role = esc(c.grantee_role.as_deref().unwrap_or("any")),
                    scope = esc(&scope.join(", ")),
                    purpose = esc(&c.purpose),
                    granted = esc(&time(c.granted_at)),
                    tx = tx_link(&c.tx_id),
                    expires = esc(&time(c.expires_at)),
                    class = if status == "active" {
                        "valid"
                    } else {
                        "invalid"
                    },
                    status = esc(&status),
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    if own {
        let _ = write!(
            body,
            "<h3>Grant a consent</h3><form id=\"grant-form\" method=\"post\" action=\"/patient/consents\" class=\"ask\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <label>Consent id <input name=\"id\" required maxlength=\"64\" pattern=\"[A-Za-z0-9_.\\-]+\"></label>\
             <label>Organisation (MSP id) <input name=\"grantee\" required maxlength=\"64\"></label>\
             <label>Only the role <input name=\"role\" maxlength=\"32\" placeholder=\"any\"></label>\
             <label>Record types <input name=\"types\" maxlength=\"512\" placeholder=\"Observation, Condition\"></label>\
             <label>Record ids <input name=\"records\" maxlength=\"512\" placeholder=\"R-100\"></label>\
             <label>Purpose <input name=\"purpose\" required maxlength=\"256\"></label>\
             <label>Hours <input name=\"hours\" type=\"number\" min=\"1\" max=\"8760\" value=\"24\" required></label>\
             <button>Grant</button></form>",
            token = esc(&s.form_token),
        );
    }
    let mut reads: Vec<AccessEntry> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for (id, p) in provenances {
        match p {
            Ok(p) => reads.extend(p.reads),
            Err(e) => refused.push(format!("{id}: {e}")),
        }
    }
    reads.sort_by_key(|r| std::cmp::Reverse(r.at));
    let _ = write!(
        body,
        "<h2>Access log across these records</h2>{}{}",
        html::bar_chart(
            "accesses-per-day",
            "Accesses per day",
            &html::per_day(reads.iter().map(|r| r.at))
        ),
        access_table(&reads, true)
    );
    if !refused.is_empty() {
        body.push_str(&html::refusal(
            "Some records' accesses are not shown",
            &refused.join("; "),
        ));
    }
    ok(v, &title, body)
}

#[derive(Deserialize)]
pub struct VerifyQuery {
    id: Option<String>,
    hash: Option<String>,
}

const CERTIFICATE_FORM: &str = "<form id=\"verify-form\" action=\"/certificate\" method=\"get\" class=\"ask\">\
    <label>Certificate id <input id=\"cert-id\" name=\"id\" required maxlength=\"64\" pattern=\"[A-Za-z0-9_.\\-]+\"></label>\
    <label>Paste the document <textarea id=\"doc-text\" rows=\"5\" cols=\"60\"></textarea></label>\
    <label>or choose its file <input id=\"doc-file\" type=\"file\"></label>\
    <label>SHA-256 <input id=\"doc-hash\" name=\"hash\" maxlength=\"64\" pattern=\"[0-9a-f]{64}\" \
    placeholder=\"computed in this browser from the document\"></label>\
    <button id=\"verify\" type=\"submit\">Verify</button>\
    <p class=\"note\">The document never leaves this browser: only its SHA-256 (computed here with \
    WebCrypto) and the certificate id are sent.</p></form>";

/// `/certificate`: the form, and with `id` and `hash` the verdict.
pub async fn certificate(State(s): Shared, Query(q): Query<VerifyQuery>) -> Response {
    let v = &s.viewer;
    let (Some(id), Some(hash)) = (q.id, q.hash) else {
        return ok(v, "Certificate verification", CERTIFICATE_FORM.into());
    };
    let hash = hash.trim().to_ascii_lowercase();
    if !valid_id(&id) || !valid_hex64(&hash) {
        return bad_input(
            v,
            "Certificate verification",
            "a certificate id (1-64 letters, digits, '-', '_', '.') and a SHA-256 of 64 hex characters",
        );
    }
    let verdict = match s
        .peer
        .query_json::<Verification>("VerifyCertificate", &[&id, &hash])
        .await
    {
        Ok(ver) => verdict_html(&s, &id, &hash, &ver).await,
        Err(ExplorerError::Refused(r)) if r.contains("not found") => format!(
            "<div id=\"verdict\" class=\"verdict verdict-bad\" data-status=\"unknown\"><h2>Unknown</h2>\
             <p>No certificate {} is on the ledger: {}</p></div>",
            esc(&id),
            esc(&r)
        ),
        Err(e) => return failure(v, "Certificate verification", &e),
    };
    ok(
        v,
        "Certificate verification",
        format!("{verdict}<h2>Verify another</h2>{CERTIFICATE_FORM}"),
    )
}

async fn verdict_html(s: &AppState, id: &str, hash: &str, ver: &Verification) -> String {
    let (headline, explain) = match ver.status.as_str() {
        "valid" => (
            "Valid",
            "A valid, unrevoked certificate covers this document.",
        ),
        "revoked" => (
            "Revoked",
            "The certificate covering this document has been revoked.",
        ),
        "expired" => (
            "Expired",
            "The certificate covering this document has expired.",
        ),
        "not_yet_valid" => ("Not yet valid", "The certificate is not valid yet."),
        "mismatch" => (
            "Not this document",
            "The certificate exists, but it covers another document (the hashes differ).",
        ),
        _ => (
            "Unknown status",
            "The chaincode answered a status this explorer does not know.",
        ),
    };
    let mut revocation = String::new();
    if ver.status == "revoked" {
        // Who revoked it: the creator of the transaction that set `revoked`.
        let history: Vec<HashMap<String, serde_json::Value>> = s
            .peer
            .query_json("CertificateHistory", &[id])
            .await
            .unwrap_or_default();
        let revoking = history
            .iter()
            .find(|h| h.get("revoked").and_then(|r| r.as_bool()) == Some(true))
            .and_then(|h| h.get("txId").and_then(|t| t.as_str()).map(str::to_owned));
        if let Some(tx) = revoking.filter(|t| valid_hex64(t)) {
            let by = match s.peer.block_of_tx(&tx).await {
                Ok(b) => chain::transaction(&b, &tx)
                    .map(|d| {
                        format!(
                            " by {} at {}",
                            who(&d.summary.creator.subject, &d.summary.creator.msp),
                            esc(&time_opt(d.summary.time))
                        )
                    })
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
            revocation = format!(
                "<p id=\"revoked-by\">Revoked in transaction {}{by}.</p>",
                tx_link(&tx)
            );
        }
    }
    format!(
        "<div id=\"verdict\" class=\"verdict {class}\" data-status=\"{status}\"><h2>{headline}</h2><p>{explain}</p>\
         <dl class=\"facts\"><dt>Certificate</dt><dd>{id} ({kind})</dd><dt>Issued by</dt><dd id=\"issuer\">{issuer}</dd>\
         <dt>Valid until</dt><dd>{until}</dd><dt>Document SHA-256</dt><dd><code id=\"checked-hash\">{hash}</code></dd></dl>{revocation}</div>",
        class = if ver.status == "valid" {
            "verdict-ok"
        } else {
            "verdict-bad"
        },
        status = esc(&ver.status),
        id = esc(id),
        kind = esc(&ver.kind),
        issuer = who(&ver.issuer_subject, &ver.issuer_msp),
        until = esc(&time(ver.valid_until)),
        hash = esc(hash),
    )
}

async fn proof_download(
    s: &AppState,
    name: &str,
    record: Option<&str>,
    txs: &[String],
) -> Response {
    let mut session = s.peer.session();
    match medledger_peer::node::cli::export_proof(
        &mut session,
        record,
        txs,
        &s.peer.channel,
        &s.peer.chaincode,
    )
    .await
    {
        Ok(bundle) => match serde_json::to_vec_pretty(&bundle) {
            Ok(json) => {
                let disposition = format!("attachment; filename=\"{name}-proof.json\"");
                let mut r = (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    json,
                )
                    .into_response();
                if let Ok(d) = HeaderValue::from_str(&disposition) {
                    r.headers_mut().insert(header::CONTENT_DISPOSITION, d);
                }
                r
            }
            Err(e) => failure(&s.viewer, "Proof", &ExplorerError::Decode(e.to_string())),
        },
        Err(e) => failure(&s.viewer, "Proof", &crate::peer::classify(e)),
    }
}

/// `/record/{id}/proof.json`: the record's offline proof bundle.
pub async fn record_proof(State(s): Shared, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return bad_input(
            &s.viewer,
            "Proof",
            "a record id is 1-64 letters, digits, '-', '_' or '.'",
        );
    }
    proof_download(&s, &id, Some(&id), &[]).await
}

/// `/tx/{id}/proof.json`: the offline proof of a transaction's writes.
pub async fn tx_proof(State(s): Shared, Path(tx_id): Path<String>) -> Response {
    if !valid_hex64(&tx_id) {
        return bad_input(
            &s.viewer,
            "Proof",
            "a transaction id is 64 lowercase hex characters",
        );
    }
    proof_download(&s, &tx_id, None, std::slice::from_ref(&tx_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_hashes_are_checked_before_they_reach_the_peer() {
        assert!(valid_id("R-1.a_b"));
        assert!(!valid_id("R 1") && !valid_id("") && !valid_id(&"x".repeat(65)));
        assert!(!valid_id("<script>"));
        assert!(valid_hex64(&"ab".repeat(32)));
        assert!(!valid_hex64(&"AB".repeat(32)) && !valid_hex64("abc"));
        assert_eq!(common_name("CN=doctor1,OU=client,O=H1"), "doctor1");
    }
}

/// The longest consent the form grants: a year.
const MAX_CONSENT_HOURS: u32 = 8760;

/// The fields of the patient's grant form.
#[derive(Deserialize)]
pub struct GrantForm {
    token: String,
    id: String,
    grantee: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    types: String,
    #[serde(default)]
    records: String,
    purpose: String,
    hours: u32,
}

/// The token field of a form that changes the ledger.
#[derive(Deserialize)]
pub struct TokenForm {
    token: String,
}

/// Why a ledger-changing form is not acted on: not the patient's own explorer, another site's
/// page (`Sec-Fetch-Site`), or a token this explorer did not hand out.
fn refuse_form(s: &AppState, headers: &axum::http::HeaderMap, token: &str) -> Option<Response> {
    let v = &s.viewer;
    if v.patient_id.is_none() {
        return Some(respond(
            v,
            StatusCode::FORBIDDEN,
            "Consents",
            html::refusal(
                "Not a patient",
                "Only an explorer running as a patient (patientId) grants or revokes consent.",
            ),
            Some("consent form from an explorer that is not a patient's".into()),
        ));
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|site| site != "same-origin" && site != "none");
    let same = token.len() == s.form_token.len()
        && token
            .bytes()
            .zip(s.form_token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if cross_site || !same {
        return Some(respond(
            v,
            StatusCode::FORBIDDEN,
            "Consents",
            html::refusal(
                "Form refused",
                "The form did not come from this explorer's page: reload the page and try again.",
            ),
            Some("consent form without this explorer's token or from another site".into()),
        ));
    }
    None
}

fn list_of(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `POST /patient/consents`: the patient grants a consent (GrantConsent, submitted and committed).
pub async fn grant_consent(
    State(s): Shared,
    headers: axum::http::HeaderMap,
    axum::Form(f): axum::Form<GrantForm>,
) -> Response {
    if let Some(r) = refuse_form(&s, &headers, &f.token) {
        return r;
    }
    if !valid_id(f.id.trim()) || !(1..=MAX_CONSENT_HOURS).contains(&f.hours) {
        return bad_input(
            &s.viewer,
            "Consent not granted",
            "a consent id is 1-64 letters, digits, '-', '_' or '.', for 1 to 8760 hours",
        );
    }
    let expires = medledger_common::msp::unix_now().saturating_add(i64::from(f.hours) * 3600);
    let mut request = serde_json::json!({
        "id": f.id.trim(),
        "granteeMsp": f.grantee.trim(),
        "scope": {"recordTypes": list_of(&f.types), "recordIds": list_of(&f.records)},
        "purpose": f.purpose.trim(),
        "expiresAt": expires,
    });
    if !f.role.trim().is_empty() {
        request["granteeRole"] = serde_json::json!(f.role.trim());
    }
    match s.peer.submit("GrantConsent", &[&request.to_string()]).await {
        Ok(_) => Redirect::to("/patient").into_response(),
        Err(e) => failure(&s.viewer, "Consent not granted", &e),
    }
}

/// `POST /patient/consents/{id}/revoke`: the patient revokes (RevokeConsent erases the copies
/// shared under it).
pub async fn revoke_consent(
    State(s): Shared,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    axum::Form(f): axum::Form<TokenForm>,
) -> Response {
    if let Some(r) = refuse_form(&s, &headers, &f.token) {
        return r;
    }
    if !valid_id(&id) {
        return bad_input(
            &s.viewer,
            "Consent not revoked",
            "a consent id is 1-64 letters, digits, '-', '_' or '.'",
        );
    }
    match s.peer.submit("RevokeConsent", &[&id]).await {
        Ok(_) => Redirect::to("/patient").into_response(),
        Err(e) => failure(&s.viewer, "Consent not revoked", &e),
    }
}
