//! Default names of the requests the plugin creates: `<stem>-<unix seconds>`.

use checkpointing::names::DNS_LABEL_MAX;

/// `<stem>-<unix seconds>`, lower case, other characters than letters, digits and `-` replaced
/// by `-`, the stem shortened so the whole is a DNS label: the controller derives labels, image
/// tags and pod names from request names, so a label is what fits everywhere (and it is a DNS
/// subdomain too).
pub fn dated(stem: &str, unix_seconds: u64) -> String {
    let suffix = format!("-{unix_seconds}");
    let mut stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // Every char is ASCII now, so any length is a char boundary.
    stem.truncate(DNS_LABEL_MAX - suffix.len());
    format!("{}{suffix}", stem.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::names::is_dns_label;

    #[test]
    fn dated_names_are_dns_labels() {
        assert_eq!(dated("web.v2-App_1", 5), "web-v2-app-1-5");
        let name = dated(&"a".repeat(253), u64::MAX);
        assert_eq!(name.len(), DNS_LABEL_MAX);
        assert!(name.ends_with(&format!("-{}", u64::MAX)));
        assert!(is_dns_label(&name), "{name}");
        // A cut right after a `-` leaves no `--` before the seconds.
        let name = dated(&format!("{}-b", "a".repeat(52)), 1_700_000_000);
        assert_eq!(name, format!("{}-1700000000", "a".repeat(52)));
        assert!(is_dns_label(&dated("-x-", 1)));
    }
}
