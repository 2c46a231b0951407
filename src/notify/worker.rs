//! The delivery loop: route owed notices, then send what is due, each message under a lease so
//! that several instances on one PostgreSQL database never send one twice at once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::email::Mailer;
use super::render::Message;
use super::route::Router;
use super::settings::{WebhookKind, WebhookTarget};
use super::webhook::WebhookSender;
use super::{AttemptOutcome, Audience, Channel, Notification, NotifySettings, Settlement};
use crate::error::Result;
use crate::store::Store;
use crate::time::Clock;

/// Messages sent at once by one worker.
const CONCURRENCY: usize = 16;
/// Notices routed, and messages leased, per round.
const BATCH: u32 = 200;
/// Reminders and digests are looked for once every this many rounds (5 s by default).
const ROUNDS_PER_SCHEDULE: u32 = 25;
/// The first retry waits this long; each next one twice as long, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

pub struct Notifier {
    router: Router,
    store: Arc<dyn Store>,
    settings: Arc<NotifySettings>,
    clock: Arc<dyn Clock>,
    mailer: Option<Mailer>,
    hooks: WebhookSender,
}

impl Notifier {
    pub fn new(router: Router) -> Result<Notifier> {
        let settings = router.settings.clone();
        let mailer = match (&settings.smtp, &settings.from) {
            (Some(smtp), Some(from)) => Some(Mailer::new(
                smtp,
                settings.smtp_ca_pem.as_deref(),
                from,
                settings.send_timeout,
            )?),
            _ => None,
        };
        Ok(Notifier {
            store: router.store.clone(),
            clock: router.clock.clone(),
            hooks: WebhookSender::new(settings.send_timeout)?,
            settings,
            mailer,
            router,
        })
    }

    /// Routes and delivers until `stop` changes: a round every poll interval, and the next one
    /// at once after a round that filled a batch (a backlog is not paced by the interval).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds = 0u32;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            if rounds.is_multiple_of(ROUNDS_PER_SCHEDULE) {
                self.scheduled().await;
            }
            rounds = rounds.wrapping_add(1);
            match self.round().await {
                Ok(true) => ticker.reset_immediately(),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "notification round failed; will try again"),
            }
        }
    }

    /// Reminders of detections still waiting, and digests whose hour has come.
    async fn scheduled(&self) {
        if let Err(e) = self.router.remind_pending().await {
            tracing::error!(error = %e, "cannot make reminders of pending detections; will try again");
        }
        if let Err(e) = self.router.send_digests().await {
            tracing::error!(error = %e, "cannot make the daily digests; will try again");
        }
    }

    /// One round: route what is owed, send what is due; `true` when either filled its batch,
    /// so more is probably waiting.
    pub async fn round(&self) -> Result<bool> {
        let read = self.router.route_owed(BATCH).await?;
        let attempted = self.deliver_due().await?;
        Ok(read == BATCH as usize || attempted == BATCH as usize)
    }

    /// Leases and sends the messages due now; returns how many were attempted here.
    pub async fn deliver_due(&self) -> Result<usize> {
        let now = self.clock.now();
        let due = self.store.due_notifications(now, BATCH).await?;
        let lease_until = now.after(self.settings.send_timeout * 2 + Duration::from_secs(10));
        let attempted = futures::stream::iter(due)
            .map(|n| async move {
                match self.store.lease_notification(n.id, now, lease_until).await {
                    Ok(Some(leased)) => {
                        self.attempt(leased).await;
                        1
                    }
                    Ok(None) => 0,
                    Err(e) => {
                        tracing::error!(notification = %n.id, error = %e, "cannot lease a notification");
                        0
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .fold(0usize, |sum, n| async move { sum + n })
            .await;
        Ok(attempted)
    }

    /// Sends one leased message and records the attempt.
    async fn attempt(&self, n: Notification) {
        let channel = n.channel.as_str();
        let sent = self.send(&n).await;
        let at = self.clock.now();
        let (outcome, detail) = match sent {
            Ok(detail) => (AttemptOutcome::Sent, detail),
            Err(why) if at >= n.created_at.after(self.settings.give_up_after) => {
                (AttemptOutcome::GaveUp, why)
            }
            Err(why) => (AttemptOutcome::Retry(at.after(backoff(n.attempts))), why),
        };
        match &outcome {
            AttemptOutcome::Sent => {
                metrics::counter!("killswitch_notifications_sent_total", "channel" => channel)
                    .increment(1);
                let waited = (at.as_datetime() - n.created_at.as_datetime()).num_milliseconds();
                metrics::histogram!("killswitch_notification_delivery_seconds", "channel" => channel)
                    .record(waited.max(0) as f64 / 1000.0);
            }
            AttemptOutcome::Retry(next) => {
                metrics::counter!("killswitch_notification_attempts_failed_total", "channel" => channel).increment(1);
                tracing::warn!(notification = %n.id, channel, attempt = n.attempts, next = %next, reason = %detail, "notification not delivered; will retry");
            }
            AttemptOutcome::GaveUp => {
                metrics::counter!("killswitch_notifications_given_up_total", "channel" => channel)
                    .increment(1);
                tracing::error!(notification = %n.id, channel, attempts = n.attempts, reason = %detail, "notification given up");
            }
        }
        let settlement = Settlement {
            notification: n,
            at,
            outcome,
            detail,
        };
        match self.store.settle_notification(&settlement).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(notification = %settlement.notification.id, "a later attempt was recorded first")
            }
            Err(e) => {
                tracing::error!(notification = %settlement.notification.id, error = %e, "cannot record a notification attempt; it will be retried after its lease")
            }
        }
    }

    async fn send(&self, n: &Notification) -> std::result::Result<String, String> {
        let message: Message = serde_json::from_str(&n.message)
            .map_err(|e| format!("the stored message cannot be read: {e}"))?;
        match n.channel {
            Channel::Email => match &self.mailer {
                Some(mailer) => mailer.send(n.id, &n.destination, &message).await,
                None => Err("e-mail is not configured (notify.smtp_url, notify.from)".to_owned()),
            },
            Channel::Webhook if n.audience == Audience::Customer => {
                let hook = self.customer_webhook(n).await?;
                self.hooks
                    .send(&hook, n.id, n.kind.as_str(), &message, self.clock.now())
                    .await
            }
            Channel::Slack | Channel::Teams | Channel::Webhook => {
                let Some(hook) = &self.settings.soc_webhook else {
                    return Err(
                        "the SOC webhook is no longer configured (notify.soc_webhook_url)"
                            .to_owned(),
                    );
                };
                self.hooks
                    .send(hook, n.id, n.kind.as_str(), &message, self.clock.now())
                    .await
            }
        }
    }
}

impl Notifier {
    /// Where a customer's notice goes now: its policy's webhook, signed with its secret.
    async fn customer_webhook(
        &self,
        n: &Notification,
    ) -> std::result::Result<WebhookTarget, String> {
        let gone = || "the customer no longer has a notice webhook".to_owned();
        let slug = n.customer.as_ref().ok_or_else(gone)?;
        let customer = self
            .store
            .customer(slug)
            .await
            .map_err(|_| "cannot read the customer's policy".to_owned())?
            .ok_or_else(gone)?;
        let url = customer.policy.webhook_url.ok_or_else(gone)?;
        Ok(WebhookTarget {
            url: url.into(),
            kind: WebhookKind::Standard,
            secret: Some(super::webhook::customer_secret(&self.router.cipher, slug)),
        })
    }
}

/// The wait after the `attempts`-th failure: 2 s, 4 s, 8 s, … up to 10 minutes.
fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(i64::MAX), MAX_BACKOFF);
    }
}
