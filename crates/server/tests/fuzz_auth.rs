//! Property tests over token verification and token transport. The generators make well-formed
//! JWTs with arbitrary algorithms, claims and keys (and tampered copies of good ones); the
//! expected verdict of each is computed here from the rules of docs/protocol.md, not by the
//! code under test.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, crypto};
use natter::{
    auth::{self, AuthError},
    clock::now_secs,
    config::AuthConfig,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SECRET: &str = "fuzz-secret-of-thirty-two-bytes!";
const LEEWAY: u64 = 60;

fn auth() -> auth::Auth {
    auth::Auth::new(&AuthConfig {
        secret: SECRET.into(),
        leeway: std::time::Duration::from_secs(LEEWAY),
        ..AuthConfig::default()
    })
    .unwrap()
}

/// How a generated token is signed.
#[derive(Debug, Clone)]
enum Signer {
    /// HMAC-SHA256 with this secret (the server's, or another).
    Hs256(String),
    /// No signature at all.
    Empty,
    /// Signature bytes of no key.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Token {
    alg: String,
    claims: serde_json::Map<String, Value>,
    signer: Signer,
}

impl Token {
    fn text(&self) -> String {
        let header = json!({ "alg": self.alg, "typ": "JWT" });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string())
        );
        let signature = match &self.signer {
            Signer::Hs256(secret) => crypto::sign(
                input.as_bytes(),
                &EncodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap(),
            Signer::Empty => String::new(),
            Signer::Garbage(bytes) => URL_SAFE_NO_PAD.encode(bytes),
        };
        format!("{input}.{signature}")
    }

    /// The verdict for a connection as `u` on platform `p`, from the rules.
    fn expected(&self, now: u64) -> Result<(), AuthError> {
        let signed_right = matches!(&self.signer, Signer::Hs256(s) if s == SECRET);
        if self.alg != "HS256" {
            return Err(AuthError::Malformed);
        }
        if !signed_right {
            return Err(AuthError::BadSignature);
        }
        let claim = |name: &str| self.claims.get(name);
        // An optional claim may be absent or null (the same as absent).
        let text_or_absent = |name: &str| claim(name).is_none_or(|v| v.is_string() || v.is_null());
        let number_or_absent = |name: &str| claim(name).is_none_or(|v| v.is_u64() || v.is_null());
        let Some(exp) = claim("exp").and_then(Value::as_u64) else {
            return Err(AuthError::Malformed);
        };
        // `aud` is one audience or an array of them.
        let audience_or_absent = claim("aud").is_none_or(|v| {
            v.is_string()
                || v.is_null()
                || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        });
        if !claim("sub").is_some_and(Value::is_string)
            || !number_or_absent("iat")
            // nbf is checked, so it is a number when present (null is not "absent" here).
            || !claim("nbf").is_none_or(Value::is_u64)
            || !text_or_absent("iss")
            || !audience_or_absent
            || !text_or_absent("platform")
        {
            return Err(AuthError::Malformed);
        }
        if exp + LEEWAY < now {
            return Err(AuthError::Expired);
        }
        if claim("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|nbf| nbf > now + LEEWAY)
        {
            return Err(AuthError::NotYetValid);
        }
        if claim("sub").and_then(Value::as_str) != Some("u") {
            return Err(AuthError::UserMismatch);
        }
        if claim("platform")
            .and_then(Value::as_str)
            .is_some_and(|p| p != "p")
        {
            return Err(AuthError::PlatformMismatch);
        }
        Ok(())
    }
}

fn claim_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::String),
        Just(json!(["u"])),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    let now = now_secs();
    let alg = prop_oneof![
        6 => Just("HS256".to_string()),
        1 => prop::sample::select(vec!["none", "HS384", "HS512", "RS256", "ES256", "hs256", ""])
            .prop_map(str::to_string),
    ];
    let sub = prop_oneof![
        4 => Just(Some(json!("u"))),
        1 => Just(Some(json!("v"))),
        1 => Just(None),
        1 => claim_value().prop_map(Some),
    ];
    let exp = prop_oneof![
        3 => (now..now + 3600).prop_map(|t| Some(json!(t))),
        1 => (now - 3 * LEEWAY..now - LEEWAY - 1).prop_map(|t| Some(json!(t))),
        1 => Just(None),
        1 => claim_value().prop_map(Some),
    ];
    let optional = |values: Vec<Value>| {
        prop_oneof![
            3 => Just(None),
            2 => prop::sample::select(values).prop_map(Some),
            1 => claim_value().prop_map(Some),
        ]
    };
    let signer = prop_oneof![
        4 => Just(Signer::Hs256(SECRET.to_string())),
        1 => "[a-z]{1,40}".prop_map(Signer::Hs256),
        1 => Just(Signer::Empty),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Signer::Garbage),
    ];
    (
        alg,
        sub,
        exp,
        optional(vec![json!("p"), json!("q")]),
        optional(vec![json!("x"), json!(["x", "y"]), json!([])]),
        optional(vec![json!(now)]),
        optional(vec![
            json!(now - 10),
            json!(now + 3600),
            json!(now + LEEWAY / 2),
        ]),
        signer,
    )
        .prop_map(|(alg, sub, exp, platform, aud, iat, nbf, signer)| {
            let mut claims = serde_json::Map::new();
            for (name, value) in [
                ("sub", sub),
                ("exp", exp),
                ("platform", platform),
                ("aud", aud),
                ("iat", iat),
                ("nbf", nbf),
            ] {
                if let Some(value) = value {
                    claims.insert(name.into(), value);
                }
            }
            Token {
                alg,
                claims,
                signer,
            }
        })
}

/// The decoded bytes of each of a token's three parts (None where one does not decode).
fn parts(token: &str) -> Vec<Option<Vec<u8>>> {
    token
        .split('.')
        .map(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn well_formed_tokens_get_the_verdict_the_rules_give(t in token()) {
        let text = t.text();
        let got = auth().verify(Some(&text), "u", "p").map(|_| ());
        prop_assert_eq!(got, t.expected(now_secs()), "{:?}", t);
    }

    #[test]
    fn a_tampered_token_is_accepted_only_if_it_decodes_to_the_same_bytes(
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let a = auth();
        let token = a.mint("u", None, std::time::Duration::from_secs(600)).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let Ok(tampered) = String::from_utf8(bytes) else { return Ok(()) };
        if a.verify(Some(&tampered), "u", "p").is_ok() {
            prop_assert_eq!(parts(&tampered), parts(&token), "accepted: {}", tampered);
        }
    }

    #[test]
    fn arbitrary_strings_are_refused_without_panicking(token in ".{0,200}") {
        prop_assert!(auth().verify(Some(&token), "u", "p").is_err());
    }

    #[test]
    fn token_transport_parsing_never_panics(
        q in proptest::option::of(".{0,80}"),
        h in proptest::option::of(".{0,80}"),
        p in proptest::option::of(".{0,80}"),
        origin in ".{0,40}",
    ) {
        let _ = auth::token_from_request(q.as_deref(), h.as_deref(), p.as_deref());
        let _ = auth::origin_allowed(&origin, h.as_deref(), &["https://a.example".into()]);
    }
}
