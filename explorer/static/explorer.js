// MedLedger explorer: the little JavaScript the pages use. The pages work without it (the
// certificate form then takes a SHA-256 typed in); with it, the channel page follows new blocks
// live and the certificate form hashes the document in the browser, so it is never uploaded.
"use strict";

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The channel page: one row per new block from the server's event stream.
function followBlocks() {
  const table = document.getElementById("blocks");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const max = parseInt(table.dataset.maxRows || "64", 10);
  const live = document.getElementById("live");
  const height = document.getElementById("height");
  const source = new EventSource("/events");
  source.addEventListener("open", () => { if (live) live.textContent = "live"; });
  source.addEventListener("error", () => { if (live) live.textContent = "reconnecting"; });
  source.addEventListener("block", (event) => {
    let b;
    try { b = JSON.parse(event.data); } catch (e) { return; }
    if (typeof b.number !== "number" || body.querySelector(`tr[data-block="${b.number}"]`)) return;
    const row = document.createElement("tr");
    row.dataset.block = String(b.number);
    row.className = "new";
    const link = document.createElement("a");
    link.href = "/block/" + b.number;
    link.textContent = String(b.number);
    const hash = document.createElement("code");
    hash.title = b.hash;
    hash.textContent = String(b.hash).slice(0, 16);
    const signers = (b.signers || []).map((id, i) => {
      const s = document.createElement("span");
      s.className = "signer";
      s.title = (b.signerNames || [])[i] || "";
      s.textContent = String(id);
      return s;
    });
    const cells = [[link], [hash], [b.timeText || ""], [String(b.txCount)], signers, [b.isConfig ? "configuration" : ""]];
    for (const [i, parts] of cells.entries()) {
      const td = document.createElement("td");
      if (i === 3) td.className = "num";
      for (const p of parts) {
        if (typeof p === "string") td.append(p); else { td.append(p, " "); }
      }
      row.append(td);
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > max) body.deleteRow(body.rows.length - 1);
    if (height) height.textContent = String(b.number + 1);
  });
}

// The certificate form: SHA-256 of the chosen file, or of the pasted text as UTF-8, computed
// here with WebCrypto; only the hash and the certificate id are submitted.
function hashDocuments() {
  const form = document.getElementById("verify-form");
  if (!form) return;
  const text = document.getElementById("doc-text");
  const file = document.getElementById("doc-file");
  const out = document.getElementById("doc-hash");
  form.addEventListener("submit", async (event) => {
    const chosen = file && file.files && file.files[0];
    const pasted = text && text.value;
    if (!chosen && !pasted) return; // a hash typed in is sent as it is
    event.preventDefault();
    if (!window.crypto || !crypto.subtle) {
      out.value = "";
      out.placeholder = "this browser cannot hash here (WebCrypto needs https or localhost)";
      return;
    }
    const bytes = chosen ? await chosen.arrayBuffer() : new TextEncoder().encode(pasted);
    out.value = hex(await crypto.subtle.digest("SHA-256", bytes));
    form.dataset.hashedFrom = chosen ? "file" : "text";
    form.submit();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  followBlocks();
  hashDocuments();
});
