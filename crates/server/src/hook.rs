//! The before-send hook (`webhooks.before_send`): each message a user sends (not receipts or
//! ephemeral events) is POSTed, signed like the push webhook's batches, to the app's backend,
//! which answers `{"action": "allow"}`, `{"action": "refuse", "reason": "..."}` or
//! `{"action": "replace", "content": "..."}` within `timeout`; a failure, a late or an
//! unreadable answer gets `on_failure` (allow or refuse). The sender waits for it (its message
//! is not stored before); other connections do not.

use natter_protocol::{ErrorReason, Msg, ids::check_stored_text};
use serde::Deserialize;

use crate::{
    config::{BeforeSendConfig, HookFailure},
    delivery::Refusal,
    webhook::Webhook,
};

/// The hook, when `webhooks.before_send.url` is set.
#[derive(Debug)]
pub struct BeforeSend {
    config: BeforeSendConfig,
    webhook: Webhook,
}

/// The backend's answer.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Answer {
    Allow,
    Refuse {
        #[serde(default)]
        reason: String,
    },
    Replace {
        content: String,
    },
}

impl BeforeSend {
    /// The hook of `config`; `None` when it is off.
    pub fn new(config: &BeforeSendConfig) -> Option<BeforeSend> {
        (!config.url.is_empty()).then(|| BeforeSend {
            config: config.clone(),
            webhook: Webhook::new(&config.url, &config.secret),
        })
    }

    /// Asks the backend about `msg`; on `Ok` the message goes on (its content perhaps
    /// replaced).
    pub async fn ask(&self, msg: &mut Msg) -> Result<(), Refusal> {
        before_send(&self.config, &self.webhook, msg).await
    }
}

async fn before_send(
    config: &BeforeSendConfig,
    webhook: &Webhook,
    msg: &mut Msg,
) -> Result<(), Refusal> {
    // The answer counts only if it comes by `deadline` (Unix ms): the backend can tell.
    let deadline = crate::clock::now_millis() + config.timeout.as_millis() as i64;
    let body = format!(r#"{{"message":{},"deadline":{deadline}}}"#, msg.encode());
    let failed = |why: String| match config.on_failure {
        HookFailure::Allow => {
            tracing::warn!(%why, "the before-send hook failed: the message goes on");
            Ok(())
        }
        HookFailure::Refuse => Err(Refusal::new(
            ErrorReason::RefusedByBackend,
            format!("the backend could not be asked ({why}); try again"),
        )),
    };
    let answer = match tokio::time::timeout(config.timeout, webhook.post(&body)).await {
        Err(_) => return failed("no answer in time".into()),
        Ok(Err(e)) => return failed(e.to_string()),
        Ok(Ok((status, _))) if !(200..300).contains(&status) => {
            return failed(format!("HTTP {status}"));
        }
        Ok(Ok((_, answer))) => answer,
    };
    match serde_json::from_str::<Answer>(&answer) {
        Ok(Answer::Allow) => Ok(()),
        Ok(Answer::Refuse { reason }) => Err(Refusal::new(ErrorReason::RefusedByBackend, reason)),
        Ok(Answer::Replace { content }) => match check_stored_text(&content) {
            Ok(()) => {
                msg.content = content;
                Ok(())
            }
            Err(why) => failed(format!("a replacement content that {why}")),
        },
        Err(e) => failed(format!("an answer that is not an action: {e}")),
    }
}
