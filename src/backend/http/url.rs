//! The configured base URL (`BaseUrl`): parsed and checked once, split around `$host`, and
//! turned into `{base}/{method}` per request. The only place where the request's server name
//! enters a URL, so the only place that decides which names may (`valid_host_name`).

use reqwest::Url;

use crate::backend::BackendError;

/// Placeholder in `url` replaced by the request's server (domain).
pub const HOST_PLACEHOLDER: &str = "$host";

/// The configured URL, split around `$host` so each request only concatenates.
#[derive(Debug, Clone)]
pub(super) struct BaseUrl {
    /// Text before and after each `$host`, without a trailing `/`.
    pieces: Vec<String>,
    /// Without `$host`, the URL parsed once: parsing it per request (IDNA and all) was 6 %
    /// of the bridge's instructions per HTTP login (callgrind, BENCHMARKS.md).
    fixed: Option<Url>,
}

impl BaseUrl {
    /// The reasons never repeat the URL: it may carry `user:password@` (refused here, but
    /// only after the checks before it), and the error names the key anyway.
    pub(super) fn parse(url: &str) -> Result<BaseUrl, String> {
        let trimmed = url.trim().trim_end_matches('/');
        let pieces: Vec<String> = trimmed.split(HOST_PLACEHOLDER).map(str::to_owned).collect();
        let sample =
            Url::parse(&pieces.join("example.org")).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(sample.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".into());
        }
        if sample.host_str().is_none() {
            return Err("no host".into());
        }
        if sample.query().is_some() || sample.fragment().is_some() {
            return Err(
                "no query string or fragment (the method name is appended to the path)".into(),
            );
        }
        if !sample.username().is_empty() || sample.password().is_some() {
            return Err("put credentials in `credentials`, not in the URL".into());
        }
        let fixed = (pieces.len() == 1).then_some(sample);
        Ok(BaseUrl { pieces, fixed })
    }

    pub(super) fn is_https(&self) -> bool {
        self.pieces[0]
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("https:"))
    }

    pub(super) fn has_host(&self) -> bool {
        self.pieces.len() > 1
    }

    /// `{base}/{method}` with `$host` replaced by `server`.
    pub(super) fn for_method(&self, server: &str, method: &str) -> Result<Url, BackendError> {
        if let Some(base) = &self.fixed {
            let mut url = base.clone();
            // `cannot-be-a-base` URLs were refused by `parse` (they have no host).
            let appended = match url.path_segments_mut() {
                Ok(mut path) => {
                    path.pop_if_empty().push(method);
                    true
                }
                Err(()) => false,
            };
            if appended {
                return Ok(url);
            }
        }
        if self.has_host() && !valid_host_name(server) {
            // The client's input must not choose where the request goes: a final no.
            return Err(BackendError::Protocol(
                "server name is not a domain name (labels of letters, digits, - and _), refused in $host".into(),
            ));
        }
        let mut text = self.pieces.join(server);
        text.push('/');
        text.push_str(method);
        Url::parse(&text)
            .map_err(|e| BackendError::Protocol(format!("URL for server {server:?}: {e}")))
    }

    /// The URL with `$host` still in it, for logs and descriptions.
    pub(super) fn display(&self) -> String {
        self.pieces.join(HOST_PLACEHOLDER)
    }
}

/// A domain name: non-empty labels of letters, digits, `-` and `_`, joined by single dots,
/// at most 253 characters and 63 per label. Nothing else goes into `$host`: `..`, `.` or an
/// empty label would be a path segment (`/tenants/../xmpp` is `/xmpp`), and `/`, `?`, `@`,
/// `%`, a space would change the URL outright. Letters and digits may be Unicode: ejabberd
/// and Prosody nameprep a host but keep an internationalised one in its Unicode form
/// (`bücher.de`), and no Unicode letter or digit is a URL delimiter.
fn valid_host_name(server: &str) -> bool {
    server.chars().count() <= 253
        && server.split('.').all(|label| {
            !label.is_empty()
                && label.chars().count() <= 63
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_validation() {
        for bad in [
            "ftp://x/y",
            "not a url",
            "https://x/y?a=b",
            "https://u:p@x/y",
            "/relative",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
        let b = BaseUrl::parse("https://$host/api/").unwrap();
        assert_eq!(
            b.for_method("example.net", "user_exists").unwrap().as_str(),
            "https://example.net/api/user_exists"
        );
        assert!(b.for_method("evil.com/x?", "user_exists").is_err());
        assert!(b.for_method("a@b", "user_exists").is_err());
        let long_label = "a".repeat(64);
        for not_a_domain in [
            "..",
            ".",
            "",
            "a..b",
            ".a",
            "a.",
            long_label.as_str(),
            "a\u{2044}b",
            "a\u{ff0e}b",
        ] {
            assert!(
                b.for_method(not_a_domain, "user_exists").is_err(),
                "{not_a_domain}"
            );
        }
        assert!(b.for_method("xn--bcher-kva.de", "user_exists").is_ok());
        // An internationalised host as the servers send it, nameprepped but in Unicode.
        assert_eq!(
            b.for_method("b\u{fc}cher.de", "user_exists")
                .unwrap()
                .as_str(),
            "https://xn--bcher-kva.de/api/user_exists"
        );
        let b = BaseUrl::parse("http://127.0.0.1:1/x").unwrap();
        assert_eq!(
            b.for_method("a/b", "register").unwrap().as_str(),
            "http://127.0.0.1:1/x/register"
        );
    }

    #[test]
    fn a_url_parsed_once_gives_what_parsing_per_request_gave() {
        for base in [
            "http://h",
            "http://h/",
            "http://h/api",
            "https://h/api//",
            "http://h:8080/a/b/",
            "http://h/a%20b",
            "http://BÜCHER.example/x",
            "http://[::1]:9/auth",
        ] {
            let b = BaseUrl::parse(base).unwrap();
            assert!(b.fixed.is_some(), "{base}");
            for method in ["check_password", "user_exists", "remove_user"] {
                let slow = Url::parse(&format!("{}/{method}", b.pieces[0])).unwrap();
                assert_eq!(b.for_method("any", method).unwrap(), slow, "{base}");
            }
        }
    }
}
