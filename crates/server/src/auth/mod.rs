//! Who is connecting: token verification, token minting, and the origin check.
//!
//! A token is a JWT whose `sub` is the user id, with `exp` required; `iss` and `aud` are checked
//! when configured, and an optional `platform` claim binds the token to one platform id. With no
//! key configured the server is in development mode: the path's user id is taken as is, and the
//! config refuses that anywhere but on a loopback address.

mod revoked;
mod transport;

use std::time::Duration;

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, errors::ErrorKind,
};
use natter_protocol::HttpError;
use serde::{Deserialize, Serialize};

pub use self::revoked::{Revocation, Revoked, TokenTag};
pub use self::transport::{BEARER_PROTOCOL_PREFIX, PROTOCOL, origin_allowed, token_from_request};
use crate::config::{AuthConfig, MIN_SECRET_LEN, TokenAlgorithm};

/// A token's `aud`: one audience, or several (RFC 7519 allows both).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims Natter reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Not before (Unix seconds): checked, with the leeway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Binds the token to one platform id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The token's id: what revokes this one token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// An authenticated connection's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// When the token expires (Unix seconds); `None` in development mode.
    pub expires_at: Option<u64>,
    /// What revocations look at; `None` in development mode (no token). Boxed: an identity
    /// lives as long as its connection, and most are in development mode or hold no more.
    pub token: Option<Box<TokenTag>>,
}

impl Identity {
    fn development(user: &str) -> Identity {
        Identity {
            user: user.to_owned(),
            expires_at: None,
            token: None,
        }
    }
}

/// Why a connection was refused before the upgrade (HTTP 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason().as_str())]
pub enum AuthError {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    BadSignature,
    BadIssuer,
    BadAudience,
    UserMismatch,
    PlatformMismatch,
    Revoked,
}

impl AuthError {
    /// The HTTP refusal it becomes (its `error` value is also the metric label).
    pub fn reason(self) -> HttpError {
        match self {
            AuthError::Missing => HttpError::TokenMissing,
            AuthError::Malformed => HttpError::TokenMalformed,
            AuthError::Expired => HttpError::TokenExpired,
            AuthError::NotYetValid => HttpError::TokenNotYetValid,
            AuthError::BadSignature => HttpError::TokenBadSignature,
            AuthError::BadIssuer => HttpError::TokenBadIssuer,
            AuthError::BadAudience => HttpError::TokenBadAudience,
            AuthError::UserMismatch => HttpError::TokenUserMismatch,
            AuthError::PlatformMismatch => HttpError::TokenPlatformMismatch,
            AuthError::Revoked => HttpError::TokenRevoked,
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "no token: pass ?token=, an Authorization: Bearer header, or a bearer.<token> subprotocol"
            }
            AuthError::Malformed => "the token is not a well-formed JWT for this server",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token's nbf has not come yet",
            AuthError::BadSignature => "the token's signature does not verify",
            AuthError::BadIssuer => "the token's iss is not the configured issuer",
            AuthError::BadAudience => "the token's aud does not include the configured audience",
            AuthError::UserMismatch => "the token's sub is not the user id in the URL",
            AuthError::PlatformMismatch => "the token is bound to another platform",
            AuthError::Revoked => "the token was revoked: ask the app for a new one",
        }
    }
}

/// A key that cannot be used, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.public_key_file `{path}`: {problem}")]
    File { path: String, problem: String },
    #[error("auth.secret is {0} bytes; an HS256 secret needs at least {MIN_SECRET_LEN}")]
    ShortSecret(usize),
}

enum Mode {
    Development,
    Jwt {
        decoding: Box<DecodingKey>,
        /// Present for HS256 only: the server can mint tokens with the shared secret.
        encoding: Option<Box<EncodingKey>>,
        validation: Box<Validation>,
    },
}

pub struct Auth {
    mode: Mode,
    /// The revoked tokens: `verify` refuses them.
    pub revoked: Revoked,
    leeway_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Development => "development",
            Mode::Jwt { .. } => "jwt",
        };
        f.debug_struct("Auth").field("mode", &mode).finish()
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, KeyError> {
        let issuer = non_empty(&config.issuer);
        let audience = non_empty(&config.audience);
        if !config.token_required() {
            return Ok(Auth {
                mode: Mode::Development,
                revoked: Revoked::default(),
                leeway_secs: config.leeway.as_secs(),
                issuer,
                audience,
            });
        }
        let (algorithm, decoding, encoding) = match config.algorithm {
            TokenAlgorithm::HS256 if config.secret.len() < MIN_SECRET_LEN => {
                return Err(KeyError::ShortSecret(config.secret.len()));
            }
            TokenAlgorithm::HS256 => (
                Algorithm::HS256,
                DecodingKey::from_secret(config.secret.as_bytes()),
                Some(Box::new(EncodingKey::from_secret(config.secret.as_bytes()))),
            ),
            alg @ (TokenAlgorithm::RS256 | TokenAlgorithm::ES256) => {
                let path = &config.public_key_file;
                let key_error = |problem: String| KeyError::File {
                    path: path.clone(),
                    problem,
                };
                let pem = std::fs::read(path).map_err(|e| key_error(e.to_string()))?;
                let (algorithm, key) = if alg == TokenAlgorithm::RS256 {
                    (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem))
                } else {
                    (Algorithm::ES256, DecodingKey::from_ec_pem(&pem))
                };
                (algorithm, key.map_err(|e| key_error(e.to_string()))?, None)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Auth {
            mode: Mode::Jwt {
                decoding: Box::new(decoding),
                encoding,
                validation: Box::new(validation),
            },
            revoked: Revoked::default(),
            leeway_secs: config.leeway.as_secs(),
            issuer,
            audience,
        })
    }

    /// How long past `exp` (and before `nbf`) a token is still accepted.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    pub fn is_development(&self) -> bool {
        matches!(self.mode, Mode::Development)
    }

    /// Who presents `token` (HTTP API). In development mode there is no token: the caller names
    /// the user (`dev_user`).
    pub fn identify(
        &self,
        token: Option<&str>,
        dev_user: Option<&str>,
    ) -> Result<Identity, AuthError> {
        if self.is_development() {
            let user = dev_user
                .filter(|u| !u.is_empty())
                .ok_or(AuthError::Missing)?;
            return Ok(Identity::development(user));
        }
        let Some(sub) = token.and_then(unverified_sub) else {
            return Err(if token.is_some() {
                AuthError::Malformed
            } else {
                AuthError::Missing
            });
        };
        self.verify(token, &sub, "")
    }

    /// Checks that `token` lets its bearer connect as `user` on `platform`.
    pub fn verify(
        &self,
        token: Option<&str>,
        user: &str,
        platform: &str,
    ) -> Result<Identity, AuthError> {
        let Mode::Jwt {
            decoding,
            validation,
            ..
        } = &self.mode
        else {
            return Ok(Identity::development(user));
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let claims = decode::<Claims>(token, decoding, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidIssuer => AuthError::BadIssuer,
                ErrorKind::InvalidAudience => AuthError::BadAudience,
                _ => AuthError::Malformed,
            })?
            .claims;
        if claims.sub != user {
            return Err(AuthError::UserMismatch);
        }
        if !platform.is_empty() && claims.platform.as_deref().is_some_and(|p| p != platform) {
            return Err(AuthError::PlatformMismatch);
        }
        let tag = TokenTag {
            issued_at: claims.iat,
            jti: claims.jti.map(Into::into),
        };
        if self.revoked.covers(&claims.sub, &tag) {
            return Err(AuthError::Revoked);
        }
        Ok(Identity {
            user: claims.sub,
            expires_at: Some(claims.exp),
            token: Some(Box::new(tag)),
        })
    }

    /// Signs a token for `user` valid for `ttl` (HS256 with the configured secret).
    pub fn mint(
        &self,
        user: &str,
        platform: Option<&str>,
        ttl: Duration,
    ) -> Result<String, MintError> {
        let Mode::Jwt {
            encoding: Some(key),
            ..
        } = &self.mode
        else {
            return Err(MintError::NoSecret);
        };
        let now = crate::clock::now_secs();
        let claims = Claims {
            sub: user.to_owned(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            nbf: None,
            platform: platform.map(str::to_owned),
            jti: Some(new_jti()),
        };
        encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| MintError::Sign(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "minting tokens needs auth.secret (HS256); RS256/ES256 tokens are signed by your own backend"
    )]
    NoSecret,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A fresh token id: unique, not secret (a UUIDv7, like a message's `server_id`).
fn new_jti() -> String {
    crate::ids::message_id(crate::clock::now_millis())
        .simple()
        .to_string()
}

/// The `sub` of a JWT, read without checking anything: only to know which user to verify the
/// token for. `verify` then checks the signature and every claim.
fn unverified_sub(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Sub>(token)
        .ok()
        .map(|s| s.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(secret: &str) -> Auth {
        Auth::new(&AuthConfig {
            secret: secret.into(),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify_and_bind_user_and_platform() {
        let auth = hs("unit-test-secret-of-thirty-two-b");
        let t = auth
            .mint("alice", Some("phone"), Duration::from_secs(60))
            .unwrap();
        let id = auth.verify(Some(&t), "alice", "phone").unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(
            auth.verify(Some(&t), "bob", "phone"),
            Err(AuthError::UserMismatch)
        );
        assert_eq!(
            auth.verify(Some(&t), "alice", "web"),
            Err(AuthError::PlatformMismatch)
        );
        assert_eq!(
            hs("other-unit-test-secret-of-32-byte").verify(Some(&t), "alice", "phone"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(auth.verify(None, "alice", "phone"), Err(AuthError::Missing));
        assert_eq!(
            auth.verify(Some("x.y.z"), "alice", "phone"),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn token_sources() {
        assert_eq!(
            token_from_request(Some("a=1&token=T"), None, None),
            (Some("T"), None)
        );
        assert_eq!(
            token_from_request(None, Some("Bearer T"), None),
            (Some("T"), None)
        );
        assert_eq!(
            token_from_request(None, None, Some("natter, bearer.T")),
            (Some("T"), Some("natter"))
        );
        assert_eq!(
            token_from_request(None, None, Some("bearer.T")),
            (Some("T"), Some("bearer.T"))
        );
        assert_eq!(token_from_request(None, None, Some("natter")), (None, None));
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed(
            "http://chat.example:50000",
            Some("chat.example:50000"),
            &none
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            Some("chat.example"),
            &none
        ));
        assert!(origin_allowed(
            "https://app.example",
            Some("x"),
            &["https://app.example".into()]
        ));
        assert!(origin_allowed(
            "https://any.example",
            Some("x"),
            &["*".into()]
        ));
    }
}
