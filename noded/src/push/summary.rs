//! What of a registry's answer may reach a request's status: the request's status is read by
//! the tenant who chose the registry, and a "registry" may be any server noded can reach. So
//! never a body as it came, only the error codes and messages of distribution's error format
//! (`{"errors":[{"code":…,"message":…}]}`), bounded and on one line; anything else is told by
//! its HTTP status alone.

/// Errors of one answer told at most.
const MAX_ERRORS: usize = 3;
const MAX_CODE: usize = 40;
const MAX_MESSAGE: usize = 120;
/// Longest URL shown in a message (its query, which registries fill with state, is left out).
const MAX_URL: usize = 160;

/// `CODE: message; CODE: message` of a distribution error body; `None` for any other body.
pub fn summarise(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errors = answer.get("errors")?.as_array()?;
    let told: Vec<String> = errors
        .iter()
        .filter_map(|error| {
            let code = error.get("code")?.as_str()?;
            let is_code = !code.is_empty()
                && code.len() <= MAX_CODE
                && code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !is_code {
                return None;
            }
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map(|m| one_line(m, MAX_MESSAGE))
                .filter(|m| !m.is_empty());
            Some(match message {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            })
        })
        .take(MAX_ERRORS)
        .collect();
    (!told.is_empty()).then(|| told.join("; "))
}

/// `text` as printable ASCII on one line, runs of blanks as one space, at most `max`
/// characters (an ellipsis marks a cut).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '?' }),
        );
        if out.len() > max {
            break;
        }
    }
    if out.len() > max {
        out.truncate(max.saturating_sub(3));
        out.push_str("...");
    }
    out
}

/// `url` for a message: without its query, bounded.
pub fn shown_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    one_line(without_query, MAX_URL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_errors_are_told_by_code_and_message() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":{"secret":"x"}},{"code":"UNAUTHORIZED"}]}"#;
        assert_eq!(
            summarise(body).as_deref(),
            Some("DENIED: requested access to the resource is denied; UNAUTHORIZED")
        );
    }

    /// Whatever a server that is not a registry answers (an instance metadata service, an
    /// admin page) stays out of the status.
    #[test]
    fn any_other_body_is_not_told() {
        for body in [
            &b"ami-id\ninstance-id\niam/security-credentials/role"[..],
            b"<html>admin</html>",
            b"{\"AccessKeyId\":\"AKIA\",\"SecretAccessKey\":\"s3cr3t\"}",
            b"{\"errors\":\"not a list\"}",
            b"{\"errors\":[{\"code\":\"lower case or secret: s3cr3t\"}]}",
            b"{\"errors\":[{\"message\":\"no code\"}]}",
            b"",
        ] {
            assert_eq!(summarise(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn told_errors_are_bounded_and_on_one_line() {
        let long = "x".repeat(10_000);
        let body = format!(
            r#"{{"errors":[{{"code":"A","message":"line one\nline\t two\u0007 é"}},{{"code":"B","message":"{long}"}},{{"code":"C"}},{{"code":"D"}}]}}"#
        );
        let told = summarise(body.as_bytes()).unwrap();
        assert!(told.starts_with("A: line one line two ?; B: xxx"), "{told}");
        assert!(told.ends_with("...; C"), "{told}");
        assert!(!told.contains('D'), "at most three errors: {told}");
        assert!(told.len() < 200, "{told}");
        assert!(told.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    }

    #[test]
    fn urls_are_shown_without_query_and_bounded() {
        assert_eq!(
            shown_url("https://r/v2/x/blobs/uploads/u1?_state=abc&digest=sha256%3A00"),
            "https://r/v2/x/blobs/uploads/u1"
        );
        let long = format!("https://r/{}", "a".repeat(1000));
        assert_eq!(shown_url(&long).len(), MAX_URL);
    }
}
