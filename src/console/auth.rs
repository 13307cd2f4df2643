//! Who may see the console: whoever holds `ADMIN_TOKEN`, given once as `?token=…` (then kept
//! in an `HttpOnly`, `SameSite=Strict` cookie) or as `Authorization: Bearer …` by scripts.
//!
//! The cookie holds its expiry and a digest of it keyed by the token, not the token: a cookie
//! read off a browser does not give the secret, it stops working after 12 hours whatever the
//! browser does, and a new `ADMIN_TOKEN` ends every session.

use actix_web::http::header;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::Token;

pub const COOKIE: &str = "callhippo_console";

/// How long the cookie lasts: a working day and night.
const COOKIE_MAX_AGE_S: u32 = 12 * 3600;

/// Cookies of our name looked at in one request.
const MAX_COOKIES: usize = 4;

pub struct AdminAuth {
    token: Token,
    session: [u8; 32],
}

/// How a request proved it may see the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Cookie,
    Bearer,
    Denied,
}

/// What a request's `?token=` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryToken {
    Absent,
    Right,
    Wrong,
}

impl AdminAuth {
    pub fn new(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"callhippo-ingest console session\0");
        h.update(secret.as_bytes());
        AdminAuth {
            token: Token::new(secret),
            session: h.finalize().into(),
        }
    }

    /// Checks the `Authorization` header (one at most: one guess a request) and the cookies
    /// of our name (the first few).
    pub fn access(&self, req: &HttpRequest) -> Access {
        let authorizations: Vec<_> = req.headers().get_all(header::AUTHORIZATION).collect();
        let cookies = cookie_values(req);
        if authorizations.len() > 1 {
            return Access::Denied;
        }
        let bearer = (authorizations.first())
            .and_then(|v| crate::http::bearer(v))
            .is_some_and(|t| self.token.matches(t));
        // Another program on this host (cookies do not tell ports apart) may have set one of
        // the same name: any of a few may be ours.
        let now = chrono::Utc::now().timestamp();
        let cookie = cookies
            .iter()
            .take(MAX_COOKIES)
            .any(|v| self.is_session(v, now));
        match (bearer, cookie) {
            (true, _) => Access::Bearer,
            (false, true) => Access::Cookie,
            _ => Access::Denied,
        }
    }

    pub fn query_token(&self, req: &HttpRequest) -> QueryToken {
        let given: Vec<_> = form_urlencoded::parse(req.query_string().as_bytes())
            .filter(|(k, _)| k == "token")
            .map(|(_, v)| v)
            .collect();
        match given.as_slice() {
            [] => QueryToken::Absent,
            [one] if self.token.matches(one) => QueryToken::Right,
            _ => QueryToken::Wrong,
        }
    }

    /// The `Set-Cookie` value of a session; `Secure` when the page was reached over HTTPS.
    pub fn session_cookie(&self, secure: bool) -> String {
        let expires = chrono::Utc::now().timestamp() + i64::from(COOKIE_MAX_AGE_S);
        format!(
            "{COOKIE}={expires}.{}; Path=/console; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict{}",
            hex::encode(self.seal(expires)),
            if secure { "; Secure" } else { "" }
        )
    }

    /// The digest that proves a session's expiry was set by a holder of the token.
    fn seal(&self, expires: i64) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.session)
            .chain_update(expires.to_be_bytes())
            .finalize()
            .into()
    }

    /// Whether `value` is a session this token sealed that has not expired.
    fn is_session(&self, value: &str, now: i64) -> bool {
        let Some((expires, seal)) = value.split_once('.') else {
            return false;
        };
        let (Ok(expires), Ok(seal)) = (expires.parse::<i64>(), hex::decode(seal)) else {
            return false;
        };
        let valid = seal.len() == 32 && bool::from(seal.ct_eq(&self.seal(expires)));
        valid && now < expires && expires <= now + i64::from(COOKIE_MAX_AGE_S)
    }
}

/// Every value of our cookie in the request's `Cookie` headers.
fn cookie_values(req: &HttpRequest) -> Vec<String> {
    (req.headers().get_all(header::COOKIE))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.trim().to_owned())
        })
        .collect()
}

/// Whether a state-changing request comes from the console's own page: no browser sends a
/// cross-site request with an `Origin` of this host, and `Sec-Fetch-Site` says where the
/// page that sent it is.
pub fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some_and(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const SECRET: &str = "console-secret-0123456789";

    #[test]
    fn the_cookie_is_a_digest_and_opens_the_console() {
        let auth = AdminAuth::new(SECRET);
        let set = auth.session_cookie(false);
        assert!(!set.contains(SECRET));
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let value = set.split(';').next().unwrap();
        let req = TestRequest::default()
            .insert_header((header::COOKIE, format!("other=1; {value}")))
            .to_http_request();
        assert_eq!(auth.access(&req), Access::Cookie);
        let other = AdminAuth::new("another-secret-0123456");
        assert_eq!(other.access(&req), Access::Denied);
        // Beside a cookie of the same name set by another program, still ours.
        let req = TestRequest::default()
            .insert_header((header::COOKIE, format!("{COOKIE}=junk; {value}")))
            .to_http_request();
        assert_eq!(auth.access(&req), Access::Cookie);
    }

    #[test]
    fn a_session_expires_and_cannot_be_extended() {
        let auth = AdminAuth::new(SECRET);
        let now = chrono::Utc::now().timestamp();
        let sealed = |expires: i64| format!("{expires}.{}", hex::encode(auth.seal(expires)));
        assert!(auth.is_session(&sealed(now + 60), now));
        assert!(!auth.is_session(&sealed(now - 1), now), "expired");
        assert!(
            !auth.is_session(&sealed(now + 400 * 86_400), now),
            "too far ahead"
        );
        let forged = format!("{}.{}", now + 3600, hex::encode(auth.seal(now + 60)));
        assert!(
            !auth.is_session(&forged, now),
            "another expiry, the same seal"
        );
        assert!(!auth.is_session("garbage", now));
    }

    #[test]
    fn bearer_opens_and_one_guess_a_request() {
        let auth = AdminAuth::new(SECRET);
        let req = TestRequest::default()
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .to_http_request();
        assert_eq!(auth.access(&req), Access::Bearer);
        let req = TestRequest::default()
            .append_header((header::AUTHORIZATION, "Bearer wrong"))
            .append_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .to_http_request();
        assert_eq!(auth.access(&req), Access::Denied);
        let req =
            TestRequest::with_uri(&format!("/console?token=x&token={SECRET}")).to_http_request();
        assert_eq!(auth.query_token(&req), QueryToken::Wrong);
        let req = TestRequest::with_uri(&format!("/console?token={SECRET}")).to_http_request();
        assert_eq!(auth.query_token(&req), QueryToken::Right);
        assert_eq!(
            auth.access(&req),
            Access::Denied,
            "the query is for GET /console only"
        );
    }

    #[test]
    fn only_the_page_itself_may_replay() {
        let own = TestRequest::post()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:8080"))
            .insert_header(("sec-fetch-site", "same-origin"))
            .to_http_request();
        assert!(same_origin(&own));
        let other = TestRequest::post()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!same_origin(&other));
        let cross = TestRequest::post()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:8080"))
            .insert_header(("sec-fetch-site", "cross-site"))
            .to_http_request();
        assert!(!same_origin(&cross));
        let bare = TestRequest::post()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .to_http_request();
        assert!(!same_origin(&bare));
    }
}
