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
