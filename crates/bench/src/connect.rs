//! `connect`: handshakes per second, with or without token verification.

use std::time::Instant;

use anyhow::bail;
use futures_util::{StreamExt, stream};

use crate::net::{Net, Ws};

#[derive(serde::Serialize)]
pub(crate) struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

pub(crate) async fn connect_rate(
    net: &Net,
    conns: usize,
    concurrency: usize,
    secret: Option<&str>,
) -> anyhow::Result<()> {
    let users: Vec<String> = (0..conns).map(|i| format!("c{i}")).collect();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let tokens: Vec<Option<String>> = match secret {
        Some(secret) => {
            let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
            let header = jsonwebtoken::Header::default();
            users
                .iter()
                .map(|sub| jsonwebtoken::encode(&header, &Claims { sub, exp }, &key).map(Some))
                .collect::<Result<_, _>>()?
        }
        None => vec![None; conns],
    };
    let started = Instant::now();
    let results: Vec<anyhow::Result<Ws>> = stream::iter(0..conns)
        .map(|i| {
            let (user, token) = (&users[i], tokens[i].as_deref());
            async move { net.connect_with_token(i, user, "bench", token).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e:#}");
    }
    println!(
        "scenario: connect conns={conns} concurrency={concurrency} auth={}",
        if secret.is_some() { "jwt" } else { "none" }
    );
    println!(
        "handshakes: {ok} ok of {conns} in {secs:.2} s = {:.0}/s",
        ok as f64 / secs
    );
    drop(results);
    if ok != conns {
        bail!("{} handshakes failed", conns - ok);
    }
    Ok(())
}
