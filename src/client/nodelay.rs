//! Turns off Nagle's algorithm on the client's connection to the relay.
//!
//! rust_socketio opens its WebSocket with tokio-tungstenite's `connect_async`, which leaves
//! Nagle's algorithm on and offers no way to reach the socket. With it on, the small messages this
//! protocol lives on (a frame header, a credit grant, an answer) wait for the peer's delayed
//! acknowledgement of the previous segment, which caps a stream at a fraction of the link. So
//! after connecting, the client finds its own TCP sockets to the relay's address among the
//! process's open descriptors and sets `TCP_NODELAY` on them. Only sockets whose peer is the relay
//! are touched, and setting the option on one of them twice is harmless.

use std::net::SocketAddr;

/// Sets `TCP_NODELAY` on this process's TCP sockets connected to one of `peers`. Returns how many
/// sockets it set.
#[cfg(target_os = "linux")]
pub(crate) fn set_on_sockets_to(peers: &[SocketAddr]) -> usize {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is open (listed just now) and is a socket; it is only borrowed
        // for the two calls below. Should it be closed and reused in between, the calls fail or
        // set a harmless option on another socket of this process.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let to_relay = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| peers.contains(&a));
        if to_relay && sock.tcp_nodelay().ok() == Some(false) && sock.set_tcp_nodelay(true).is_ok()
        {
            set += 1;
        }
    }
    set
}

/// Other systems keep the socket's defaults.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_on_sockets_to(_: &[SocketAddr]) -> usize {
    0
}

/// The socket addresses a `http://host:port/...` URL resolves to.
pub(crate) async fn resolve(url: &str) -> Vec<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let default_port = if url.starts_with("https") { 443 } else { 80 };
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    match tokio::net::lookup_host(target).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => Vec::new(),
    }
}
