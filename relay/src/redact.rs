//! Keeps secrets out of logs: URLs end up in logs, so every query parameter
//! that can carry a token is replaced before a URL is logged.

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 3] = ["token", "access_token", "jwt"];

/// The query string with the values of secret parameters replaced by `REDACTED`.
pub fn query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) => {
                format!("{name}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The parts of a URL around its userinfo password: scheme, user (if any),
/// password, host and the rest. `None` when the URL carries no password.
fn userinfo(url: &str) -> Option<(&str, Option<&str>, &str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = authority.rsplit_once('@')?;
    Some(match userinfo.split_once(':') {
        Some((user, password)) => (scheme, Some(user), password, host, tail),
        // `redis://secret@host`: a lone userinfo is the password in Redis URLs.
        None => (scheme, None, userinfo, host, tail),
    })
}

/// The password of a URL's userinfo, if it has a non-empty one.
pub fn password_of(url: &str) -> Option<&str> {
    userinfo(url)
        .map(|(_, _, password, _, _)| password)
        .filter(|p| !p.is_empty())
}

/// A URL with the password of its userinfo (`scheme://user:password@host`)
/// replaced by `REDACTED`, so a Redis URL can be named in an error.
pub fn url_password(url: &str) -> String {
    match userinfo(url) {
        Some((scheme, Some(user), _, host, tail)) => {
            format!("{scheme}://{user}:REDACTED@{host}{tail}")
        }
        Some((scheme, None, _, host, tail)) => format!("{scheme}://REDACTED@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            super::url_password("redis://default:s3cr3t@fly-x.upstash.io:6379/0"),
            "redis://default:REDACTED@fly-x.upstash.io:6379/0"
        );
        assert_eq!(
            super::url_password("rediss://:p@ss@host:6380"),
            "rediss://:REDACTED@host:6380"
        );
        assert_eq!(
            super::url_password("redis+cluster://u:s3cr3t@10.0.0.1:7000,10.0.0.2:7000"),
            "redis+cluster://u:REDACTED@10.0.0.1:7000,10.0.0.2:7000"
        );
        assert_eq!(
            super::url_password("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(super::url_password("not a url"), "not a url");
        assert_eq!(super::password_of("rediss://:p@ss@host:6380"), Some("p@ss"));
        assert_eq!(super::password_of("redis://127.0.0.1:6379/"), None);
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(
            super::query("token=abc.def&last_event_id=5-0"),
            "token=REDACTED&last_event_id=5-0"
        );
        assert_eq!(super::query("a=1&TOKEN=x"), "a=1&TOKEN=REDACTED");
        assert_eq!(super::query(""), "");
    }
}
