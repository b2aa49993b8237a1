//! Connection admission shared by the SMTP and IMAP listeners: a cap per client address and in
//! all; a slot is freed when its session ends.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Accepts connections on `listener` until `shutdown`, running `serve` for each in `tracker`.
/// Accept errors (EMFILE and friends) back off instead of spinning.
pub async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    protocol: &'static str,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, protocol, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: they are IPv4 clients
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let span = tracing::info_span!("conn", protocol, %peer, local = ?local);
        tracker.spawn(serve(stream, peer).instrument(span));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server has as many sessions as it takes.
    Full,
    /// This address has as many sessions as it may.
    PerAddress,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    max_per_ip: u32,
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .limits
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            inner: Mutex::default(),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

/// How far past a message's size its read buffer may grow (a read's worth, and then some).
pub const READ_SLACK: usize = 1 << 20;

/// Bytes of message data the mail listeners may hold in memory at once (DATA and BDAT bodies,
/// APPEND literals), in all and per client address, so that many large transfers at once get a
/// temporary failure instead of the server's memory.
#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    per_ip: usize,
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Bytes held by one session; grows as its message does, given back when dropped or reset.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    ip: IpAddr,
    bytes: usize,
}

impl MemoryBudget {
    /// `total` bytes in all; one client address may hold a quarter of it (at least
    /// `min_per_ip`, so one largest message always fits when the server is otherwise idle).
    pub fn new(total: usize, min_per_ip: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total: total.max(min_per_ip),
            per_ip: (total / 4).max(min_per_ip),
            used: Mutex::default(),
        })
    }

    /// An empty reservation for a session of `ip`.
    pub fn reservation(self: &Arc<Self>, ip: IpAddr) -> Reservation {
        Reservation {
            budget: self.clone(),
            ip,
            bytes: 0,
        }
    }

    /// Bytes held in all now.
    pub fn used(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Reservation {
    /// Grows the reservation to `bytes` (never shrinks it); false when the budget can't hold
    /// that, and then nothing changes.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let more = bytes - self.bytes;
        let b = &self.budget;
        let mut used = b.used.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = used.per_ip.get(&self.ip).copied().unwrap_or(0);
        if used.total.saturating_add(more) > b.total || mine.saturating_add(more) > b.per_ip {
            return false;
        }
        used.total += more;
        *used.per_ip.entry(self.ip).or_insert(0) += more;
        self.bytes = bytes;
        true
    }

    /// Gives everything back.
    pub fn release(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        used.total = used.total.saturating_sub(self.bytes);
        if let Some(n) = used.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                used.per_ip.remove(&self.ip);
            }
        }
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_in_all_and_per_address_and_is_given_back() {
        let b = MemoryBudget::new(1000, 100);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let mut a = b.reservation(ip(1));
        assert!(a.grow_to(250));
        assert!(!a.grow_to(251), "a quarter per address");
        let mut others: Vec<_> = (2..5).map(|n| b.reservation(ip(n))).collect();
        for r in &mut others {
            assert!(r.grow_to(250));
        }
        let mut late = b.reservation(ip(9));
        assert!(!late.grow_to(1), "all of it is held");
        drop(others.pop());
        assert!(late.grow_to(250));
        a.release();
        assert_eq!(b.used(), 750);
        drop(late);
        drop(others);
        assert_eq!(b.used(), 0);
    }
}
