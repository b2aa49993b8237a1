//! Alerts: every lfd ban and escalation, blocklist refresh error and tamper repair, stored with a
//! bounded history, and sent by email (through the mail queue the binary hands in) and webhook.
//!
//! Each sender keeps a cursor in the store (the last alert id it handled), so a restart neither
//! loses nor repeats a notification. Email is digested: an alert raised within `LF_ALERT_DIGEST`
//! seconds of the last alert email waits and goes out with the others in one message. The
//! webhook gets one JSON POST per alert, retried with backoff until the receiver takes it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use wispd_store::schema::{FW_ALERT_CURSORS, FW_ALERTS, FwAlert};
use wispd_store::{Store, StoreError};

use crate::engine::{Firewall, now};

/// Alerts kept; older ones are pruned.
pub const MAX_ALERTS: u64 = 10_000;
/// Lines of one digest email; the rest is counted.
const MAX_DIGEST_LINES: usize = 200;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// An alert email for the binary to queue.
#[derive(Debug, Clone)]
pub struct AlertMail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Queues an alert email (the binary passes wispd's own outbound queue in).
pub type MailFn = Arc<
    dyn Fn(AlertMail) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What the senders did since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderStats {
    pub running: bool,
    pub emails_sent: u64,
    pub webhooks_sent: u64,
    /// Failed sends (each retry counts).
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_email_at: Option<i64>,
    pub last_webhook_at: Option<i64>,
}

/// The alert history and the senders' state.
#[derive(Debug)]
pub struct Alerts {
    store: Store,
    /// The next id and the times of the last day's alerts.
    inner: Mutex<(u64, VecDeque<i64>)>,
    wake: tokio::sync::Notify,
    stats: Mutex<SenderStats>,
    /// Whether the binary gave the sender a way to mail.
    can_mail: std::sync::atomic::AtomicBool,
}

fn unpoison<T>(r: std::sync::LockResult<T>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Alerts {
    pub(crate) fn load(store: Store) -> Result<Alerts, StoreError> {
        let t = now();
        let (next, day) = store.read(|r| {
            let next = r.get(&FW_ALERT_CURSORS, "next")?.unwrap_or(1u64).max(1);
            let from = next.saturating_sub(MAX_ALERTS);
            let day: VecDeque<i64> = r
                .values_in(&FW_ALERTS, from..)?
                .into_iter()
                .map(|a: FwAlert| a.at)
                .filter(|at| *at > t - 86_400)
                .collect();
            Ok::<_, StoreError>((next, day))
        })?;
        Ok(Alerts {
            store,
            inner: Mutex::new((next, day)),
            wake: tokio::sync::Notify::new(),
            stats: Mutex::new(SenderStats::default()),
            can_mail: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Stores a new alert and wakes the senders.
    pub fn raise(
        &self,
        kind: &str,
        ip: Option<String>,
        service: Option<&str>,
        message: String,
        email: bool,
    ) -> Result<FwAlert, StoreError> {
        let mut inner = unpoison(self.inner.lock());
        let alert = FwAlert {
            id: inner.0,
            at: now(),
            kind: kind.to_string(),
            ip,
            service: service.map(str::to_string),
            message,
            email,
        };
        self.store.write(|w| {
            w.put(&FW_ALERTS, alert.id, &alert)?;
            w.put(&FW_ALERT_CURSORS, "next", &(alert.id + 1))?;
            if alert.id > MAX_ALERTS {
                w.retain_in(&FW_ALERTS, ..=alert.id - MAX_ALERTS, |_| false)?;
            }
            Ok::<_, StoreError>(())
        })?;
        inner.0 = alert.id + 1;
        inner.1.push_back(alert.at);
        if inner.1.len() > MAX_ALERTS as usize {
            inner.1.pop_front();
        }
        drop(inner);
        tracing::warn!(kind, message = %alert.message, "firewall alert");
        self.wake.notify_one();
        Ok(alert)
    }

    /// Alerts newest first: page `page` (from 1) of `per_page`, and how many there are.
    pub fn list(&self, page: u64, per_page: u64) -> Result<(Vec<FwAlert>, u64), StoreError> {
        let next = unpoison(self.inner.lock()).0;
        let total = self.store.read(|r| r.len(&FW_ALERTS))?;
        let skip = page.saturating_sub(1).saturating_mul(per_page);
        let Some(hi) = next.checked_sub(1 + skip).filter(|h| *h > 0) else {
            return Ok((Vec::new(), total));
        };
        let lo = hi.saturating_sub(per_page.saturating_sub(1)).max(1);
        let mut v = self.store.read(|r| r.values_in(&FW_ALERTS, lo..=hi))?;
        v.reverse();
        Ok((v, total))
    }

    /// Alerts raised in the last 24 hours.
    pub fn last_day(&self) -> usize {
        let t = now();
        let mut inner = unpoison(self.inner.lock());
        while inner.1.front().is_some_and(|at| *at <= t - 86_400) {
            inner.1.pop_front();
        }
        inner.1.len()
    }

    pub fn stats(&self) -> SenderStats {
        unpoison(self.stats.lock()).clone()
    }

    /// Whether alert emails can be sent at all (the mail engine is wired in).
    pub fn can_mail(&self) -> bool {
        self.can_mail.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .store
            .read(|r| r.get(&FW_ALERT_CURSORS, name))?
            .unwrap_or(0))
    }

    fn set_cursor(&self, name: &str, id: u64) -> Result<(), StoreError> {
        self.store.write(|w| w.put(&FW_ALERT_CURSORS, name, &id))
    }

    fn after(&self, cursor: u64) -> Result<Vec<FwAlert>, StoreError> {
        let next = unpoison(self.inner.lock()).0;
        let from = (cursor + 1).max(next.saturating_sub(MAX_ALERTS));
        self.store.read(|r| r.values_in(&FW_ALERTS, from..))
    }

    /// Alerts not yet sent: those that want email and were not mailed, or (with a webhook) not
    /// yet posted, whichever is more.
    pub fn unnotified(&self, webhook: bool) -> Result<u64, StoreError> {
        let email = self
            .after(self.cursor("email")?)?
            .iter()
            .filter(|a| a.email)
            .count() as u64;
        let hook = if webhook {
            self.after(self.cursor("webhook")?)?.len() as u64
        } else {
            0
        };
        Ok(email.max(hook))
    }

    fn failed(&self, what: &str, e: &str) {
        let mut s = unpoison(self.stats.lock());
        s.failures += 1;
        s.last_error = Some(format!("{what}: {e}"));
        s.last_error_at = Some(now());
        tracing::warn!(error = %e, "{what} failed");
    }
}

/// The alert JSON a webhook receives.
#[derive(Debug, Serialize)]
pub struct WebhookAlert<'a> {
    pub id: u64,
    pub at: i64,
    pub host: &'a str,
    pub kind: &'a str,
    pub ip: Option<&'a str>,
    pub service: Option<&'a str>,
    pub message: &'a str,
}

/// The alert senders: runs until `shutdown`. `mail` queues an email; `host` names the server.
pub async fn run(
    fw: Arc<Firewall>,
    mail: Option<MailFn>,
    host: String,
    shutdown: CancellationToken,
) {
    let alerts = fw.alerts();
    alerts
        .can_mail
        .store(mail.is_some(), std::sync::atomic::Ordering::Relaxed);
    unpoison(alerts.stats.lock()).running = true;
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wispd/", env!("CARGO_PKG_VERSION")))
        .build()
        .ok();
    let mut email_retry_at = 0i64;
    let mut email_backoff = Duration::from_secs(1);
    let mut hook_retry_at = 0i64;
    let mut hook_backoff = Duration::from_secs(1);
    loop {
        let wait = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = alerts.wake.notified() => {}
            () = wait => {}
        }
        let Ok(settings) = fw.parsed_settings() else {
            continue;
        };
        let s = settings.lfd;
        let t = now();
        // email
        if let Some(mail) = &mail
            && !s.alert_to.is_empty()
            && t >= email_retry_at
        {
            match email_due(alerts, &s, t, &host) {
                Ok(Some((msg, last))) => match mail(msg).await {
                    Ok(()) => {
                        if let Err(e) = alerts.set_cursor("email", last) {
                            alerts.failed("alert email", &e.to_string());
                        }
                        let mut st = unpoison(alerts.stats.lock());
                        st.emails_sent += 1;
                        st.last_email_at = Some(t);
                        email_backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        alerts.failed("alert email", &e);
                        email_retry_at = t + secs(email_backoff);
                        email_backoff = (email_backoff * 2).min(MAX_BACKOFF);
                    }
                },
                Ok(None) => {}
                Err(e) => alerts.failed("alert email", &e.to_string()),
            }
        }
        // webhook: one alert at a time, in order
        if !s.webhook.is_empty()
            && t >= hook_retry_at
            && let Some(client) = &client
        {
            loop {
                let pending = match alerts.cursor("webhook").and_then(|c| alerts.after(c)) {
                    Ok(p) => p,
                    Err(e) => {
                        alerts.failed("alert webhook", &e.to_string());
                        break;
                    }
                };
                let Some(a) = pending.first() else { break };
                let body = WebhookAlert {
                    id: a.id,
                    at: a.at,
                    host: &host,
                    kind: &a.kind,
                    ip: a.ip.as_deref(),
                    service: a.service.as_deref(),
                    message: &a.message,
                };
                let sent = client.post(&s.webhook).json(&body).send().await;
                match sent.map(|r| r.status()) {
                    Ok(st) if st.is_success() => {
                        if let Err(e) = alerts.set_cursor("webhook", a.id) {
                            alerts.failed("alert webhook", &e.to_string());
                            break;
                        }
                        let mut stats = unpoison(alerts.stats.lock());
                        stats.webhooks_sent += 1;
                        stats.last_webhook_at = Some(now());
                        hook_backoff = Duration::from_secs(1);
                    }
                    Ok(st) => {
                        alerts.failed("alert webhook", &format!("the receiver answered {st}"));
                        hook_retry_at = now() + secs(hook_backoff);
                        hook_backoff = (hook_backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                    Err(e) => {
                        alerts.failed("alert webhook", &error_chain(&e));
                        hook_retry_at = now() + secs(hook_backoff);
                        hook_backoff = (hook_backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
            }
        }
    }
    unpoison(alerts.stats.lock()).running = false;
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The email to send now, if one is due: every alert wanting email since the cursor, once the
/// digest window since the last email has passed. Alerts that want no email move the cursor on.
fn email_due(
    alerts: &Alerts,
    s: &crate::lfd::LfdSettings,
    t: i64,
    host: &str,
) -> Result<Option<(AlertMail, u64)>, StoreError> {
    let cursor = alerts.cursor("email")?;
    let pending = alerts.after(cursor)?;
    let Some(last) = pending.last().map(|a| a.id) else {
        return Ok(None);
    };
    let wanted: Vec<&FwAlert> = pending.iter().filter(|a| a.email).collect();
    if wanted.is_empty() {
        alerts.set_cursor("email", last)?;
        return Ok(None);
    }
    let last_sent = alerts.stats().last_email_at;
    if last_sent.is_some_and(|at| t < at + s.alert_digest) {
        return Ok(None);
    }
    let subject = match wanted.as_slice() {
        [one] => format!("lfd on {host}: {}", one.message),
        many => format!("lfd on {host}: {} alerts", many.len()),
    };
    let mut body = String::new();
    for a in wanted.iter().rev().take(MAX_DIGEST_LINES).rev() {
        body.push_str(&format!("{}  {}  {}\r\n", utc(a.at), a.kind, a.message));
    }
    if wanted.len() > MAX_DIGEST_LINES {
        body.push_str(&format!(
            "… and {} earlier alerts (GET /api/v1/csf/alerts lists them all)\r\n",
            wanted.len() - MAX_DIGEST_LINES
        ));
    }
    let from = if s.alert_from.is_empty() {
        format!("lfd@{host}")
    } else {
        s.alert_from.clone()
    };
    Ok(Some((
        AlertMail {
            from,
            to: s.alert_to.clone(),
            subject,
            body,
        },
        last,
    )))
}

/// `2026-12-03 14:05:09 UTC`.
pub fn utc(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_civil_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_796_310_309), "2026-12-03 15:05:09 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
