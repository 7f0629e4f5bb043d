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

/// A URL with the password of its userinfo (`scheme://user:password@host`)
/// replaced by `REDACTED`, so a Redis URL can be named in an error.
pub fn url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:REDACTED@{host}{tail}"),
        // `redis://secret@host`: a lone userinfo is the password in Redis URLs.
        None => format!("{scheme}://REDACTED@{host}{tail}"),
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
            super::url_password("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(super::url_password("not a url"), "not a url");
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
