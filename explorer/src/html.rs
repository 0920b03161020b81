//! HTML building blocks: escaping (every value from the ledger, the peer or the request goes
//! through [`esc`]), the page layout, times, and inline-SVG bar charts. No templates and no
//! inline scripts or styles, so the Content-Security-Policy can stay `default-src 'self'`.

use std::fmt::Write as _;

/// `text` safe inside HTML text and double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` safe as one path segment of a link (ids are restricted by the chaincode, but the
/// explorer does not rely on that).
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{seconds} (not a time)"),
    }
}

/// The day (`YYYY-MM-DD`) of a time.
pub fn day(seconds: i64) -> String {
    time(seconds).chars().take(10).collect()
}

/// An optional time, or a dash.
pub fn time_opt(seconds: Option<i64>) -> String {
    seconds.map(time).unwrap_or_else(|| "—".into())
}

/// The identity the explorer runs as, shown on every page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub msp: String,
    pub subject: String,
    pub role: Option<String>,
    pub patient_id: Option<String>,
    pub peer: String,
    pub channel: String,
}

/// A whole page: title, navigation, who is looking, the body.
pub fn page(title: &str, viewer: &Viewer, body: &str) -> String {
    let role = viewer
        .role
        .as_deref()
        .map(|r| format!(", role <b>{}</b>", esc(r)))
        .unwrap_or_default();
    let patient = viewer
        .patient_id
        .as_deref()
        .map(|p| format!(", patientId <b>{}</b>", esc(p)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · MedLedger explorer</title>\
         <link rel=\"stylesheet\" href=\"/static/explorer.css\">\
         <script src=\"/static/explorer.js\" defer></script></head><body>\
         <header><a class=\"brand\" href=\"/\">MedLedger explorer</a><nav>\
         <a href=\"/\">Channel</a><a href=\"/record\">Record</a><a href=\"/patient\">Patient</a>\
         <a href=\"/certificate\">Certificate</a></nav>\
         <p class=\"viewer\" id=\"viewer\">Channel <b>{channel}</b> on peer {peer}, as <b>{subject}</b> of \
         <b>{msp}</b>{role}{patient}. Shown is what this identity may see.</p></header>\
         <main><h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(title),
        channel = esc(&viewer.channel),
        peer = esc(&viewer.peer),
        subject = esc(&viewer.subject),
        msp = esc(&viewer.msp),
    )
}

/// A refusal or failure, shown as such (`id="refusal"` so a reader and a test find it).
pub fn refusal(what: &str, reason: &str) -> String {
    format!(
        "<div class=\"refusal\" id=\"refusal\" role=\"alert\"><b>{}</b><p>{}</p></div>",
        esc(what),
        esc(reason)
    )
}

/// A bar chart of `(label, value)` as inline SVG, with each bar's label and value as its title.
pub fn bar_chart(id: &str, caption: &str, bars: &[(String, u64)]) -> String {
    const WIDTH: u64 = 640;
    const HEIGHT: u64 = 120;
    const MAX_SLOT: u64 = 32;
    if bars.is_empty() {
        return String::new();
    }
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let n = bars.len() as u64;
    // Few bars stay bars, not blocks.
    let slot = (WIDTH / n).clamp(2, MAX_SLOT);
    let bar = slot.saturating_sub(2).max(1);
    let mut svg = format!(
        "<figure class=\"chart\"><svg id=\"{}\" viewBox=\"0 0 {WIDTH} {}\" role=\"img\" \
         aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(id),
        HEIGHT + 14,
        esc(caption)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let h = value * HEIGHT / max;
        let x = i as u64 * slot;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h}\" data-value=\"{value}\">\
             <title>{}: {value}</title></rect>",
            HEIGHT - h,
            esc(label)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" class=\"axis\"/>\
         <text x=\"0\" y=\"{}\" class=\"tick\">{}</text>\
         <text x=\"{WIDTH}\" y=\"{}\" class=\"tick end\">{}</text></svg>\
         <figcaption>{} (highest: {max})</figcaption></figure>",
        HEIGHT + 12,
        esc(&bars[0].0),
        HEIGHT + 12,
        esc(&bars[bars.len() - 1].0),
        esc(caption)
    );
    svg
}

/// Counts per day of the given times, oldest day first.
pub fn per_day(times: impl IntoIterator<Item = i64>) -> Vec<(String, u64)> {
    let mut days = std::collections::BTreeMap::<String, u64>::new();
    for t in times {
        *days.entry(day(t)).or_default() += 1;
    }
    days.into_iter().collect()
}

/// The first `n` characters of a hex string, for tables (the whole value is in the title).
pub fn short(hex: &str, n: usize) -> String {
    format!(
        "<code title=\"{}\">{}</code>",
        esc(hex),
        esc(&hex.chars().take(n).collect::<String>())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_that_could_open_markup_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url_segment("R-1/../x y"), "R-1%2F..%2Fx%20y");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(day(1_800_000_000), "2027-01-15");
        assert!(time(i64::MAX).contains("not a time"));
    }

    #[test]
    fn a_chart_has_one_bar_per_value_and_escapes_labels() {
        let svg = bar_chart("c", "tx <per> block", &[("<1>".into(), 2), ("2".into(), 4)]);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("&lt;1&gt;") && !svg.contains("<1>"));
        assert!(bar_chart("c", "none", &[]).is_empty());
    }
}
