//! Messages made by the clock rather than by an entry: a detection still waiting is announced
//! again every `notify.pending_reminder_secs` until decided, and customers who chose the daily
//! digest receive one message a day listing the day's actions, with the last witness of their
//! log. Each carries a dedupe key, so instances deciding at once make it once.

use chrono::{Duration as Span, NaiveTime, TimeZone, Utc};
use uuid::Uuid;

use super::render::{Notice, WitnessBlock};
use super::route::{About, Router, actor_words, reminder_notice};
use crate::audit::witness::Witness;
use crate::domain::ChainId;
use crate::domain::action::{ActionRecord, ActionState};
use crate::domain::cursor::ListCursor;
use crate::domain::customer::{Customer, NotifyMode};
use crate::domain::detection::DetectionState;
use crate::domain::event::NoticeKind;
use crate::error::{Error, Result};
use crate::store::ActionFilter;
use crate::time::Timestamp;

/// Reminders made per round, and actions listed in one digest.
const REMINDERS_PER_ROUND: u32 = 200;
const DIGEST_ACTIONS: u32 = 1000;

impl Router {
    /// Reminds the SOC of detections whose last word is older than the reminder interval.
    pub async fn remind_pending(&self) -> Result<usize> {
        let now = self.clock.now();
        let quiet_since = Timestamp::from_datetime(
            now.as_datetime() - Span::from_std(self.settings.pending_reminder).unwrap_or(Span::MAX),
        );
        let mut made = 0;
        for id in self
            .store
            .detections_to_remind(quiet_since, REMINDERS_PER_ROUND)
            .await?
        {
            let Some(d) = self.store.detection(id).await? else {
                continue;
            };
            if d.state != DetectionState::Pending {
                continue;
            }
            let waited = (now.as_datetime() - d.received_at.as_datetime()).num_seconds();
            let round = waited
                / i64::try_from(self.settings.pending_reminder.as_secs().max(1))
                    .unwrap_or(i64::MAX);
            let about = About {
                kind: NoticeKind::DetectionReminder,
                entry: None,
                id: Some(d.id.to_string()),
                dedupe: Some(format!("reminder:{}:{round}", d.id)),
            };
            let customer = self.store.customer(&d.customer).await?;
            let link = self.link(&format!("detections/{}", d.id));
            let messages = self.to_soc(&about, customer.as_ref(), reminder_notice(&d, &link));
            if !messages.is_empty() {
                self.store.add_notifications(messages).await?;
                made += 1;
            }
        }
        Ok(made)
    }

    /// Makes today's digest for every customer on the digest once its hour has come.
    pub async fn send_digests(&self) -> Result<usize> {
        let now = self.clock.now();
        let Some(due) = last_digest_time(now, self.settings.digest_hour_utc) else {
            return Ok(0);
        };
        let mut made = 0;
        for customer in self.store.customers().await? {
            if customer.policy.notify != NotifyMode::Digest
                || customer.policy.contact_addresses().is_empty()
            {
                continue;
            }
            let key = format!(
                "digest:{}:{}",
                customer.slug,
                due.as_datetime().date_naive()
            );
            if self
                .store
                .notification_made(&format!("{key}:customer:email"))
                .await?
            {
                continue;
            }
            let actions = self.day_of_actions(&customer, due).await?;
            if actions.is_empty() {
                continue;
            }
            let mut notice = digest_notice(&customer, &actions, due);
            notice.witness = Some(self.head_witness(&customer, now).await?);
            let about = About {
                kind: NoticeKind::Digest,
                entry: None,
                id: None,
                dedupe: Some(key),
            };
            let messages = self.to_customer(&about, &customer, notice);
            if !messages.is_empty() {
                self.store.add_notifications(messages).await?;
                made += 1;
            }
        }
        Ok(made)
    }

    /// The customer's actions that ended in the 24 hours before `due`, oldest first.
    async fn day_of_actions(
        &self,
        customer: &Customer,
        due: Timestamp,
    ) -> Result<Vec<ActionRecord>> {
        let since = Timestamp::from_datetime(due.as_datetime() - Span::hours(24));
        let filter = ActionFilter {
            customers: Some(vec![customer.slug.clone()]),
            before: Some(ListCursor::new(due, Uuid::max())),
            limit: DIGEST_ACTIONS,
            ..ActionFilter::default()
        };
        let mut actions: Vec<ActionRecord> = self
            .store
            .actions(&filter)
            .await?
            .into_iter()
            .filter(|a| a.created_at >= since && a.state != ActionState::Requested)
            .collect();
        actions.reverse();
        Ok(actions)
    }

    /// A witness of the customer's chain as it stands now.
    async fn head_witness(&self, customer: &Customer, now: Timestamp) -> Result<WitnessBlock> {
        let chain = ChainId::Customer(customer.slug.clone());
        let head = self.store.head(chain.as_str()).await?.ok_or_else(|| {
            Error::Internal(format!("customer `{}` has no audit chain", customer.slug))
        })?;
        let (seq, hash) = crate::audit::append::parse_head(&chain, Some(&head))?;
        WitnessBlock::of(&Witness::sign(&self.key, chain.as_str(), seq, &hash, now)?)
    }
}

/// The latest digest time at or before `now`: today at `hour`, or yesterday's if that is yet
/// to come.
fn last_digest_time(now: Timestamp, hour: u32) -> Option<Timestamp> {
    let time = NaiveTime::from_hms_opt(hour, 0, 0)?;
    let today = Utc.from_utc_datetime(&now.as_datetime().date_naive().and_time(time));
    let due = if today <= now.as_datetime() {
        today
    } else {
        today - Span::days(1)
    };
    Some(Timestamp::from_datetime(due))
}

fn digest_notice(customer: &Customer, actions: &[ActionRecord], due: Timestamp) -> Notice {
    let mut notice = Notice {
        subject: format!(
            "[{}] killswitch daily digest: {} action(s) on your tenant",
            customer.slug,
            actions.len()
        ),
        headline: format!(
            "What killswitch did in {} ({}) in the 24 hours before {due}.",
            customer.name, customer.slug
        ),
        data: serde_json::json!({
            "customer": customer.slug.as_str(),
            "until": due.to_string(),
            "actions": actions.iter().map(|a| serde_json::json!({
                "action_id": a.id,
                "account": a.account,
                "operation": a.operation.as_str(),
                "outcome": a.state.as_str(),
                "time": a.finished_at.unwrap_or(a.created_at).to_string(),
                "reason": a.reason,
                "ticket": a.ticket,
            })).collect::<Vec<_>>(),
        }),
        ..Notice::default()
    };
    for a in actions {
        let label = match a.state {
            ActionState::Succeeded => "Done",
            ActionState::Noop => "No change",
            ActionState::Failed => "FAILED",
            ActionState::Denied => "Refused",
            ActionState::Requested => "Running",
        };
        let line = format!(
            "{} {} {} at {} by {}; reason: {}{}",
            a.operation.as_str(),
            a.account,
            a.state.as_str(),
            a.finished_at.unwrap_or(a.created_at),
            actor_words(&a.actor),
            a.reason,
            a.ticket
                .as_deref()
                .map(|t| format!("; ticket {t}"))
                .unwrap_or_default(),
        );
        notice = notice.fact(label, line);
    }
    notice
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_due_at_its_hour_today_or_else_yesterday() {
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        assert_eq!(
            last_digest_time(at("2026-12-01T08:30:00.000000Z"), 7),
            Some(at("2026-12-01T07:00:00.000000Z"))
        );
        assert_eq!(
            last_digest_time(at("2026-12-01T06:59:59.000000Z"), 7),
            Some(at("2026-11-30T07:00:00.000000Z"))
        );
        assert_eq!(
            last_digest_time(at("2026-12-01T06:59:59.000000Z"), 24),
            None
        );
    }
}
