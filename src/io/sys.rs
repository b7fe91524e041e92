//! The few Linux system calls std and socket2 do not wrap: batched receive and send with
//! packet info, and the socket options that enable it.
//!
//! This is the only module of the crate allowed to use `unsafe`. Every unsafe block is a single
//! libc call (or a read of the control messages the kernel just wrote) with a `SAFETY:` comment
//! saying why the pointers and lengths it passes are valid.
//!
//! - [`recv_batch`]: `recvmmsg(2)`, one call for up to [`BATCH`] datagrams, each with its source,
//!   its destination address (`IPV6_PKTINFO` / `IP_PKTINFO`) and the interface it came in on.
//!   The destination is what tells a multicast discovery from a unicast request, and in address
//!   mode which device a request is for.
//! - [`send_batch`]: `sendmmsg(2)`, each datagram with an optional source address and interface
//!   (`IPV6_PKTINFO` / `IP_PKTINFO`): in address mode the source is the device's own address.
//! - [`enable_timestamps`] and [`recv_timestamped`]: `SO_TIMESTAMPNS` and `recvmsg(2)`, the
//!   kernel's receive time of each datagram, for the lab's receivers (the gate does not use them).
//! - [`try_lock_exclusive`]: `flock(2)`, which std offers only from Rust 1.89 (above our MSRV):
//!   the journal's state-directory lock.

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: larger than any CoAP-over-UDP datagram the gate accepts, so a
/// truncated read cannot happen for real requests (truncated ones are flagged and dropped).
pub const DATAGRAM_MAX: usize = 1_500;
/// Control-message space: room for an in6_pktinfo, an in_pktinfo (a dual-stack socket may
/// report both) and the SO_RXQ_OVFL counter, with their headers (40 + 32 + 24 bytes).
const CMSG_SPACE: usize = 128;

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes in the datagram's buffer.
    pub len: usize,
    /// The sender (IPv4-mapped senders on dual-stack sockets are returned as IPv4).
    pub source: SocketAddr,
    /// The destination address, when the kernel reported it.
    pub destination: Option<IpAddr>,
    /// The interface index, when the kernel reported it (0 otherwise).
    pub interface: u32,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    /// How many datagrams the kernel has dropped on this socket so far because its receive
    /// buffer was full (SO_RXQ_OVFL, a wrapping u32), when the kernel reported it.
    pub overflows: Option<u32>,
}

impl Received {
    /// A placeholder to initialise metadata arrays with.
    pub const EMPTY: Received = Received {
        len: 0,
        source: SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        destination: None,
        interface: 0,
        truncated: false,
        overflows: None,
    };
}

/// One datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// Where to.
    pub destination: SocketAddr,
    /// The source address to use (address mode), or `None` for the kernel's choice.
    pub source_ip: Option<IpAddr>,
    /// The interface to send on, or 0 for the kernel's choice.
    pub interface: u32,
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel for the destination address and interface of every datagram, and keeps the
/// socket from receiving multicast it did not join itself. `v6` sockets get both the IPv6 and
/// the IPv4 options (a dual-stack socket reports IPv4 datagrams with `IP_PKTINFO`).
///
/// Also asks for `SO_RXQ_OVFL`: each datagram then carries the socket's count of datagrams
/// dropped for a full receive buffer, which a flood would otherwise hide.
pub fn enable_packet_info(socket: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // Best effort on a v6-only socket: the IPv4 options are refused there on some kernels.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, 0);
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, 0)?;
    }
    // Best effort: without it the overflow figure stays 0 (old kernels).
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    Ok(())
}

/// Lets the socket send from addresses that are routed to the host but not assigned to an
/// interface (address mode's `ip route add local PREFIX dev lo`). IPv4 finds such sources in the
/// local routing table by itself; IPv6 needs `IPV6_FREEBIND` (Linux 4.15+, unprivileged).
pub fn enable_freebind(socket: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    if v6 {
        // libc does not export IPV6_FREEBIND for every target; its value is 78 on Linux.
        const IPV6_FREEBIND: libc::c_int = 78;
        setsockopt_int(fd, libc::IPPROTO_IPV6, IPV6_FREEBIND, 1)
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)
    }
}

/// Raises the soft limit of open files to `wanted` (or the hard limit, if lower); returns the
/// new soft limit. Port mode opens one socket per device.
pub fn raise_nofile_limit(wanted: u64) -> io::Result<u64> {
    // SAFETY: rlimit is a plain C struct for which all-zero bytes are a valid value.
    let mut limit: libc::rlimit = unsafe { zeroed() };
    // SAFETY: `limit` is a valid, writable rlimit that lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = wanted.min(limit.rlim_max);
    if limit.rlim_cur < target {
        limit.rlim_cur = target;
        // SAFETY: `limit` is a valid rlimit read above, with rlim_cur <= rlim_max.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur.max(target))
}

/// Lowers the calling thread's CPU priority by `niceness` (Linux: `setpriority(2)` on a thread
/// id changes that thread only). The journal's snapshot thread runs so, so that encoding a
/// million devices takes the CPU the API and the data path leave, not a share of theirs.
pub fn lower_thread_priority(niceness: i32) -> io::Result<()> {
    // SAFETY: gettid takes no argument and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority takes plain integers; `tid` is this thread's id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, niceness) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes an exclusive `flock(2)` on `file` without waiting: `Ok(true)` when taken, `Ok(false)`
/// when another open file description holds it (another process, or this one through another
/// `open`). Released when the file is closed. The journal uses it to own its state directory.
pub fn try_lock_exclusive(file: &impl AsRawFd) -> io::Result<bool> {
    // SAFETY: flock takes a file descriptor, valid for as long as `file` is borrowed, and flags.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(e)
}

/// Receives up to `bufs.len()` (at most [`BATCH`]) datagrams without blocking; fills `meta` and
/// returns how many arrived. `WouldBlock` when none is waiting.
pub fn recv_batch(
    socket: &impl AsRawFd,
    bufs: &mut [[u8; DATAGRAM_MAX]],
    meta: &mut [Received],
) -> io::Result<usize> {
    let n = bufs.len().min(meta.len()).min(BATCH);
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes are a valid value
    // (so are the iovec and mmsghdr arrays below).
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut controls = [[0u8; CMSG_SPACE]; BATCH];
    // SAFETY: as above, plain C structs valid when zeroed.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..n {
        iovecs[i] = libc::iovec { iov_base: bufs[i].as_mut_ptr().cast(), iov_len: DATAGRAM_MAX };
        let hdr = &mut headers[i].msg_hdr;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut iovecs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = controls[i].as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_SPACE as _;
    }
    // SAFETY: `headers[..n]` point at `names`, `iovecs` (each at a live buffer of DATAGRAM_MAX
    // bytes) and `controls`, all alive for the call; `n` is at most their lengths.
    let got = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let hdr = &headers[i].msg_hdr;
        let (destination, interface, overflows) = read_control(hdr);
        meta[i] = Received {
            len: (headers[i].msg_len as usize).min(DATAGRAM_MAX),
            source: from_storage(&names[i]).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            destination,
            interface,
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            overflows,
        };
    }
    Ok(got)
}

/// Sends `out` (at most [`BATCH`]) in one call; returns how many the kernel took. A datagram
/// the kernel refused is reported as the error if it is the first; otherwise the count stops
/// before it and the caller retries or drops the rest.
pub fn send_batch(
    socket: &impl AsRawFd,
    out: &[Outgoing<'_>],
    dual_stack: bool,
) -> io::Result<usize> {
    let n = out.len().min(BATCH);
    // SAFETY: plain C structs, valid when zeroed.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut name_lens = [0 as libc::socklen_t; BATCH];
    let mut controls = [[0u8; CMSG_SPACE]; BATCH];
    // SAFETY: as above, plain C structs valid when zeroed.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..n {
        let o = &out[i];
        name_lens[i] = to_storage(o.destination, dual_stack, &mut names[i]);
        iovecs[i] =
            libc::iovec { iov_base: o.data.as_ptr() as *mut libc::c_void, iov_len: o.data.len() };
        let control_len = write_packet_info(o, &mut controls[i]);
        let hdr = &mut headers[i].msg_hdr;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = name_lens[i];
        hdr.msg_iov = &mut iovecs[i];
        hdr.msg_iovlen = 1;
        if control_len > 0 {
            hdr.msg_control = controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = control_len as _;
        }
    }
    // SAFETY: `headers[..n]` point at `names`, `iovecs` (each at the caller's live slice,
    // only read by the kernel) and `controls`, all alive for the call.
    let sent =
        unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Asks the kernel to stamp every datagram the socket receives with its arrival time
/// (`SO_TIMESTAMPNS`: CLOCK_REALTIME, in nanoseconds), which [`recv_timestamped`] returns. For
/// the lab's receivers that measure the gate's output over time: on a veth the stamp is taken
/// when the sender's datagram enters the receiving side (in the sender's system call), so a
/// receiver that runs late does not bunch the arrivals it reports. The gate does not use it.
pub fn enable_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    setsockopt_int(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Receives one datagram without blocking (`recvmsg(2)`): its length (at most `buf.len()`), its
/// source, and the kernel's receive timestamp when the socket has [`enable_timestamps`].
/// `WouldBlock` when none is waiting.
pub fn recv_timestamped(
    socket: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<std::time::SystemTime>)> {
    // SAFETY: plain C structs, valid when zeroed.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    // u64 words: the control buffer is aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as above.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = size_of::<[u64; 16]>() as _;
    // SAFETY: `hdr` points at `name`, `iov` (at the caller's live buffer of `buf.len()` bytes)
    // and `control`, all alive for the call.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut hdr, libc::MSG_DONTWAIT) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: `hdr` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR walk the control buffer it
    // describes and stay inside msg_controllen; a SCM_TIMESTAMPNS message carries a timespec,
    // read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                );
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    let source = from_storage(&name).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok(((got as usize).min(buf.len()), source, stamp))
}

/// The destination address, the interface and the overflow count from a received message's
/// control data.
fn read_control(hdr: &libc::msghdr) -> (Option<IpAddr>, u32, Option<u32>) {
    let mut found = (None, 0, None);
    // SAFETY: `hdr` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR walk the control buffer it
    // describes and stay inside msg_controllen; each data pointer is read unaligned with the
    // size of the struct the (level, type) pair defines.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                (found.0, found.1) = (Some(ip), info.ipi6_ifindex);
            } else if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                (found.0, found.1) = (Some(IpAddr::V4(ip)), info.ipi_ifindex as u32);
            } else if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SO_RXQ_OVFL {
                found.2 = Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>()));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    found
}

/// Writes the IPV6_PKTINFO / IP_PKTINFO control message for `o` into `buf`; returns its length
/// (0 when neither a source nor an interface is chosen).
fn write_packet_info(o: &Outgoing<'_>, buf: &mut [u8; CMSG_SPACE]) -> usize {
    if o.source_ip.is_none() && o.interface == 0 {
        return 0;
    }
    // An IPv4 destination takes IP_PKTINFO even on a dual-stack socket: the kernel sends it on
    // its IPv4 path, which rejects an IPV6_PKTINFO whose source is not IPv4-mapped. So the
    // destination's family alone decides, whatever the socket's.
    let v6 = o.destination.is_ipv6();
    // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_control = buf.as_mut_ptr().cast();
    hdr.msg_controllen = CMSG_SPACE as _;
    // SAFETY: `buf` is CMSG_SPACE bytes, more than CMSG_SPACE(sizeof in6_pktinfo); CMSG_FIRSTHDR
    // of a msghdr whose control buffer is `buf` points at its start; the writes stay inside
    // CMSG_LEN of the struct written.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        if cmsg.is_null() {
            return 0;
        }
        if v6 {
            let source = match o.source_ip {
                Some(IpAddr::V6(ip)) => ip,
                Some(IpAddr::V4(ip)) => ip.to_ipv6_mapped(),
                None => Ipv6Addr::UNSPECIFIED,
            };
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: source.octets() },
                ipi6_ifindex: o.interface,
            };
            (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
            (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
            libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize
        } else {
            let source = match o.source_ip {
                Some(IpAddr::V4(ip)) => ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            let info = libc::in_pktinfo {
                ipi_ifindex: o.interface as libc::c_int,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from(source).to_be() },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            (*cmsg).cmsg_type = libc::IP_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
            libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize
        }
    }
}

/// A socket address from the kernel's representation; IPv4-mapped IPv6 becomes IPv4.
fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is big enough for.
            let a: libc::sockaddr_in6 = unsafe {
                std::ptr::read_unaligned((storage as *const libc::sockaddr_storage).cast())
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => {
                    SocketAddr::V6(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id))
                }
            })
        }
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe {
                std::ptr::read_unaligned((storage as *const libc::sockaddr_storage).cast())
            };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        _ => None,
    }
}

/// Writes `addr` as the kernel wants it for a socket of the given kind; returns the length.
/// A dual-stack (IPv6) socket needs IPv4 destinations as IPv4-mapped IPv6.
fn to_storage(
    addr: SocketAddr,
    dual_stack: bool,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let v6 = match addr {
        SocketAddr::V6(a) => Some(a),
        SocketAddr::V4(a) if dual_stack => {
            Some(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        SocketAddr::V4(_) => None,
    };
    match (v6, addr) {
        (Some(a), _) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
        (None, SocketAddr::V4(a)) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        (None, SocketAddr::V6(_)) => 0,
    }
}
