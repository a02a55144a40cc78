//! Binary stream frames: what travels in a `P2P_FRAME` event's single attachment.
//!
//! ```text
//! DATA    'D' route:16 hex  len:8 hex  body (byte-stuffed, decodes to len bytes)
//! WINDOW  'W' route:16 hex  increment:8 hex
//! FIN     'F' route:16 hex
//! RESET   'R' route:16 hex  code:8 hex  reason (UTF-8, no control characters)
//! SYNC    'S' route:16 hex  received:16 hex  limit:16 hex  flags:2 hex
//! OFFSET  'P' route:16 hex  offset:16 hex
//! ```
//!
//! SYNC and OFFSET carry a stream across a resumed session (see [`sync`] for the flags): SYNC
//! tells the other end how many bytes this end has taken in the incoming direction and the
//! absolute credit it has granted; OFFSET says at which absolute byte offset the DATA after it
//! starts.
//!
//! Why ASCII headers and stuffing: the Rust Socket.IO client (rust_engineio 0.6) splits every
//! incoming WebSocket binary message at byte `0x1E`, the Engine.IO polling separator, so a frame
//! must never contain that byte. The body escapes it: `0x1D` is the escape byte, `0x1D 0x01`
//! stands for `0x1E` and `0x1D 0x02` for `0x1D`. Random data grows by under 1%.
//!
//! The relay reads the header (type, route, declared length), checks the rest with [`check`] (one
//! scan for the two special bytes, no copy) and forwards the frame as it is: a frame that carries
//! a raw `0x1E` anywhere, a FIN or WINDOW with trailing bytes, or a DATA body that does not decode
//! to exactly its declared length never reaches the other end. Every frame [`Frame::encode`]
//! builds is free of `0x1E` (a RESET reason has its control characters replaced).

use bytes::{BufMut, Bytes, BytesMut};

/// Event name of binary stream frames.
pub const FRAME_EVENT: &str = "P2P_FRAME";
/// Length of the type byte and route.
const ROUTE_END: usize = 17;
/// Length of a DATA frame's header.
pub const DATA_HEADER_LEN: usize = 25;

const ESC: u8 = 0x1d;
const SEP: u8 = 0x1e;

/// Length of a SYNC frame.
const SYNC_LEN: usize = ROUTE_END + 16 + 16 + 2;
/// Length of an OFFSET frame.
const OFFSET_LEN: usize = ROUTE_END + 16;

/// Flags of a SYNC frame.
pub mod sync {
    /// The sender of the SYNC has received the other end's FIN (after every byte).
    pub const FIN: u8 = 0x01;
    /// The sender asks the other end to answer with its own SYNC (it resumed its session).
    pub const ASK: u8 = 0x02;
    /// The SYNC answers one that asked.
    pub const ANSWER: u8 = 0x04;
    /// Every flag this version knows.
    pub const ALL: u8 = FIN | ASK | ANSWER;
}

/// Reset codes.
pub mod code {
    /// The stream was dropped or reset by its owner.
    pub const CANCEL: u32 = 0;
    /// The peer broke the flow-control or framing rules.
    pub const PROTOCOL: u32 = 1;
    /// A client at one end disconnected.
    pub const PEER_GONE: u32 = 2;
    /// The relay could not forward a frame.
    pub const RELAY: u32 = 3;
}

/// How an end sees a RESET with `code`: the other end disconnected (`ConnectionAborted`), a
/// protocol violation (`InvalidData`), or a plain reset (`ConnectionReset`).
pub fn reset_kind(code: u32) -> std::io::ErrorKind {
    match code {
        code::PEER_GONE => std::io::ErrorKind::ConnectionAborted,
        code::PROTOCOL => std::io::ErrorKind::InvalidData,
        _ => std::io::ErrorKind::ConnectionReset,
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream bytes.
    Data {
        /// The relay's route id.
        route: u64,
        /// The bytes.
        data: Bytes,
    },
    /// More credit for the other end.
    Window {
        /// The relay's route id.
        route: u64,
        /// Bytes granted on top of what was granted before.
        increment: u32,
    },
    /// End of the sender's direction.
    Fin {
        /// The relay's route id.
        route: u64,
    },
    /// The stream is destroyed.
    Reset {
        /// The relay's route id.
        route: u64,
        /// One of [`code`].
        code: u32,
        /// Why, in words.
        reason: String,
    },
    /// Where this end stands in the incoming direction (after a resumed session, or to confirm
    /// the peer's FIN).
    Sync {
        /// The relay's route id.
        route: u64,
        /// DATA bytes this end has taken from the other end, in total.
        received: u64,
        /// The absolute credit this end has granted: its window plus every grant.
        limit: u64,
        /// See [`sync`].
        flags: u8,
    },
    /// The DATA after this frame starts at `offset` bytes into the sender's direction.
    Offset {
        /// The relay's route id.
        route: u64,
        /// The absolute offset.
        offset: u64,
    },
}

/// The kind of a frame, read from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `D`
    Data,
    /// `W`
    Window,
    /// `F`
    Fin,
    /// `R`
    Reset,
    /// `S`
    Sync,
    /// `P`
    Offset,
}

/// What the relay reads of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame's kind.
    pub kind: Kind,
    /// The route id.
    pub route: u64,
    /// For DATA, the declared (decoded) length; for WINDOW, the increment; for RESET, the code;
    /// for FIN, SYNC and OFFSET 0.
    pub value: u32,
    /// For SYNC, the bytes received; for OFFSET, the offset; else 0.
    pub position: u64,
    /// For SYNC, the absolute credit granted; else 0.
    pub limit: u64,
    /// For SYNC, its flags; else 0.
    pub flags: u8,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    /// A type byte this version does not know.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A header field that is not hexadecimal.
    #[error("malformed frame header")]
    BadHeader,
    /// A body of the wrong size or encoding for its type.
    #[error("malformed {0} frame body")]
    BadBody(&'static str),
}

fn hex_field(b: &[u8]) -> Result<u64, FrameError> {
    if b.is_empty() {
        return Err(FrameError::BadHeader);
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Err(FrameError::BadHeader),
        };
        v = (v << 4) | u64::from(d);
    }
    Ok(v)
}

fn put_hex(out: &mut BytesMut, v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.put_u8(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// Reads a frame's header, without looking at its body.
pub fn peek(buf: &[u8]) -> Result<Header, FrameError> {
    let kind = match buf.first() {
        Some(b'D') => Kind::Data,
        Some(b'W') => Kind::Window,
        Some(b'F') => Kind::Fin,
        Some(b'R') => Kind::Reset,
        Some(b'S') => Kind::Sync,
        Some(b'P') => Kind::Offset,
        Some(&other) => return Err(FrameError::UnknownType(other)),
        None => return Err(FrameError::Short(0)),
    };
    let need = match kind {
        Kind::Data => DATA_HEADER_LEN,
        Kind::Window | Kind::Reset => ROUTE_END + 8,
        Kind::Fin => ROUTE_END,
        Kind::Sync => SYNC_LEN,
        Kind::Offset => OFFSET_LEN,
    };
    if buf.len() < need {
        return Err(FrameError::Short(buf.len()));
    }
    let route = hex_field(&buf[1..ROUTE_END])?;
    let mut h = Header {
        kind,
        route,
        value: 0,
        position: 0,
        limit: 0,
        flags: 0,
    };
    match kind {
        Kind::Fin => {}
        Kind::Sync => {
            h.position = hex_field(&buf[ROUTE_END..ROUTE_END + 16])?;
            h.limit = hex_field(&buf[ROUTE_END + 16..ROUTE_END + 32])?;
            h.flags = hex_field(&buf[ROUTE_END + 32..SYNC_LEN])? as u8;
        }
        Kind::Offset => h.position = hex_field(&buf[ROUTE_END..OFFSET_LEN])?,
        _ => h.value = hex_field(&buf[ROUTE_END..ROUTE_END + 8])? as u32,
    }
    Ok(h)
}

/// Checks what [`peek`] does not read, without decoding or copying: no raw `0x1E` anywhere, the
/// exact length of FIN and WINDOW frames, a DATA body that decodes to exactly its declared
/// length, and no empty DATA frame (it carries nothing). `h` is `peek(buf)`.
pub fn check(buf: &[u8], h: &Header) -> Result<(), FrameError> {
    match h.kind {
        Kind::Data => {
            let body = &buf[DATA_HEADER_LEN..];
            let mut escapes = 0usize;
            let mut i = 0;
            while let Some(off) = memchr::memchr2(ESC, SEP, &body[i..]) {
                let at = i + off;
                if body[at] == SEP || !matches!(body.get(at + 1), Some(1 | 2)) {
                    return Err(FrameError::BadBody("DATA"));
                }
                escapes += 1;
                i = at + 2;
            }
            if h.value == 0 || body.len() - escapes != h.value as usize {
                return Err(FrameError::BadBody("DATA"));
            }
        }
        Kind::Window if buf.len() != ROUTE_END + 8 => return Err(FrameError::BadBody("WINDOW")),
        Kind::Fin if buf.len() != ROUTE_END => return Err(FrameError::BadBody("FIN")),
        Kind::Sync if buf.len() != SYNC_LEN || h.flags & !sync::ALL != 0 => {
            return Err(FrameError::BadBody("SYNC"))
        }
        Kind::Offset if buf.len() != OFFSET_LEN => return Err(FrameError::BadBody("OFFSET")),
        Kind::Reset if memchr::memchr(SEP, &buf[ROUTE_END + 8..]).is_some() => {
            return Err(FrameError::BadBody("RESET"))
        }
        _ => {}
    }
    Ok(())
}

/// Appends `data` to `out` with `0x1D`/`0x1E` escaped.
fn stuff(out: &mut BytesMut, data: &[u8]) {
    let mut start = 0;
    for i in memchr::memchr2_iter(ESC, SEP, data) {
        out.put_slice(&data[start..i]);
        out.put_u8(ESC);
        out.put_u8(if data[i] == SEP { 1 } else { 2 });
        start = i + 1;
    }
    out.put_slice(&data[start..]);
}

/// Undoes [`stuff`]; shares `body`'s memory when nothing was escaped.
fn unstuff(body: Bytes) -> Result<Bytes, FrameError> {
    if memchr::memchr2(ESC, SEP, &body).is_none() {
        return Ok(body);
    }
    let mut out = BytesMut::with_capacity(body.len());
    let mut i = 0;
    let mut start = 0;
    while let Some(off) = memchr::memchr2(ESC, SEP, &body[i..]) {
        let at = i + off;
        if body[at] == SEP {
            return Err(FrameError::BadBody("DATA"));
        }
        out.put_slice(&body[start..at]);
        match body.get(at + 1) {
            Some(1) => out.put_u8(SEP),
            Some(2) => out.put_u8(ESC),
            _ => return Err(FrameError::BadBody("DATA")),
        }
        i = at + 2;
        start = i;
    }
    out.put_slice(&body[start..]);
    Ok(out.freeze())
}

impl Frame {
    /// Decodes a frame.
    pub fn decode(buf: Bytes) -> Result<Frame, FrameError> {
        let h = peek(&buf)?;
        let route = h.route;
        Ok(match h.kind {
            Kind::Data => {
                let data = unstuff(buf.slice(DATA_HEADER_LEN..))?;
                if data.len() != h.value as usize {
                    return Err(FrameError::BadBody("DATA"));
                }
                Frame::Data { route, data }
            }
            Kind::Window => {
                if buf.len() != ROUTE_END + 8 {
                    return Err(FrameError::BadBody("WINDOW"));
                }
                Frame::Window {
                    route,
                    increment: h.value,
                }
            }
            Kind::Fin => {
                if buf.len() != ROUTE_END {
                    return Err(FrameError::BadBody("FIN"));
                }
                Frame::Fin { route }
            }
            Kind::Reset => Frame::Reset {
                route,
                code: h.value,
                reason: String::from_utf8_lossy(&buf[ROUTE_END + 8..]).into_owned(),
            },
            Kind::Sync => {
                check(&buf, &h)?;
                Frame::Sync {
                    route,
                    received: h.position,
                    limit: h.limit,
                    flags: h.flags,
                }
            }
            Kind::Offset => {
                check(&buf, &h)?;
                Frame::Offset {
                    route,
                    offset: h.position,
                }
            }
        })
    }

    /// Encodes the frame into one buffer.
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::Data { route, data } => Frame::data_from_slice(*route, data),
            Frame::Window { route, increment } => {
                let mut b = BytesMut::with_capacity(ROUTE_END + 8);
                b.put_u8(b'W');
                put_hex(&mut b, *route, 16);
                put_hex(&mut b, u64::from(*increment), 8);
                b.freeze()
            }
            Frame::Fin { route } => {
                let mut b = BytesMut::with_capacity(ROUTE_END);
                b.put_u8(b'F');
                put_hex(&mut b, *route, 16);
                b.freeze()
            }
            Frame::Reset {
                route,
                code,
                reason,
            } => {
                let mut b = BytesMut::with_capacity(ROUTE_END + 8 + reason.len());
                b.put_u8(b'R');
                put_hex(&mut b, *route, 16);
                put_hex(&mut b, u64::from(*code), 8);
                for ch in reason.chars() {
                    let ch = if ch.is_control() { ' ' } else { ch };
                    let mut tmp = [0u8; 4];
                    b.put_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                b.freeze()
            }
            Frame::Sync {
                route,
                received,
                limit,
                flags,
            } => {
                let mut b = BytesMut::with_capacity(SYNC_LEN);
                b.put_u8(b'S');
                put_hex(&mut b, *route, 16);
                put_hex(&mut b, *received, 16);
                put_hex(&mut b, *limit, 16);
                put_hex(&mut b, u64::from(*flags), 2);
                b.freeze()
            }
            Frame::Offset { route, offset } => {
                let mut b = BytesMut::with_capacity(OFFSET_LEN);
                b.put_u8(b'P');
                put_hex(&mut b, *route, 16);
                put_hex(&mut b, *offset, 16);
                b.freeze()
            }
        }
    }

    /// The route the frame belongs to.
    pub fn route(&self) -> u64 {
        match self {
            Frame::Data { route, .. }
            | Frame::Window { route, .. }
            | Frame::Fin { route }
            | Frame::Reset { route, .. }
            | Frame::Sync { route, .. }
            | Frame::Offset { route, .. } => *route,
        }
    }

    /// Encodes a DATA frame straight from a byte slice (at most `u32::MAX` bytes).
    pub fn data_from_slice(route: u64, data: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(DATA_HEADER_LEN + data.len() + data.len() / 64);
        b.put_u8(b'D');
        put_hex(&mut b, route, 16);
        put_hex(&mut b, data.len() as u64, 8);
        stuff(&mut b, data);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type() {
        let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let frames = [
            Frame::Data {
                route: 7,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                route: 1,
                data: Bytes::from(all_bytes),
            },
            Frame::Data {
                route: 2,
                data: Bytes::from_static(&[0x1e, 0x1d, 0x1d, 0x1e, 0x01, 0x02]),
            },
            Frame::Data {
                route: 3,
                data: Bytes::new(),
            },
            Frame::Window {
                route: u64::MAX,
                increment: 65536,
            },
            Frame::Fin { route: 0 },
            Frame::Sync {
                route: 9,
                received: u64::MAX - 1,
                limit: 0x1e1e_1e1e_1e1e,
                flags: sync::FIN | sync::ASK,
            },
            Frame::Offset {
                route: 10,
                offset: 1 << 40,
            },
            Frame::Reset {
                route: 3,
                code: code::PROTOCOL,
                reason: "too much".into(),
            },
        ];
        for f in frames {
            let wire = f.encode();
            assert!(!wire.contains(&SEP), "no frame carries 0x1E: {f:?}");
            assert_eq!(Frame::decode(wire).unwrap(), f);
        }
    }

    #[test]
    fn no_encoded_frame_carries_0x1e_whatever_the_reason_text() {
        // A reason built from client ids, which may hold any character.
        let reason = "client 'a\u{1e}42[\"SERVER_ERROR\"]\u{1d}\n\u{0}' disconnected";
        let wire = Frame::Reset {
            route: 0x1e1e,
            code: 0x1e,
            reason: reason.into(),
        }
        .encode();
        assert!(!wire.contains(&SEP));
        assert_eq!(check(&wire, &peek(&wire).unwrap()), Ok(()));
        match Frame::decode(wire).unwrap() {
            Frame::Reset {
                route,
                code,
                reason,
            } => {
                assert_eq!((route, code), (0x1e1e, 0x1e));
                assert!(
                    reason.starts_with("client 'a 42[\"SERVER_ERROR\"]"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn check_refuses_what_the_receiver_could_not_decode_or_split_on() {
        let ok = |b: &[u8]| check(b, &peek(b).unwrap());
        assert_eq!(ok(&Frame::data_from_slice(1, &[0x1e, 0x1d, 7])), Ok(()));
        assert_eq!(ok(&Frame::Fin { route: 1 }.encode()), Ok(()));
        let w = Frame::Window {
            route: 1,
            increment: 3,
        }
        .encode();
        assert_eq!(ok(&w), Ok(()));
        // A raw separator in a body, a reason, or after a FIN or WINDOW header.
        let mut d = b"D000000000000000100000003".to_vec();
        d.extend_from_slice(b"a\x1eb");
        assert!(ok(&d).is_err());
        assert!(ok(b"R00000000000000010000000042\x1e[]").is_err());
        let mut fin = Frame::Fin { route: 1 }.encode().to_vec();
        fin.push(SEP);
        assert!(ok(&fin).is_err());
        let mut win = w.to_vec();
        win.extend_from_slice(b"x");
        assert!(ok(&win).is_err());
        // Bodies that do not decode to their declared length, or to anything; empty DATA.
        assert!(ok(b"D000000000000000100000004\x1d\x03abc").is_err());
        assert!(ok(b"D000000000000000100000002abc").is_err());
        assert!(ok(b"D000000000000000100000002a").is_err());
        assert!(ok(b"D0000000000000001000000011d\x1d").is_err());
        assert!(ok(b"D000000000000000100000000").is_err());
        // SYNC and OFFSET: exact lengths, known flags only.
        let sync = Frame::Sync {
            route: 1,
            received: 5,
            limit: 9,
            flags: sync::ANSWER,
        }
        .encode();
        assert_eq!(ok(&sync), Ok(()));
        let mut long = sync.to_vec();
        long.push(b'0');
        assert!(ok(&long).is_err());
        let mut odd_flags = sync.to_vec();
        let n = odd_flags.len();
        odd_flags[n - 2..].copy_from_slice(b"80");
        assert!(ok(&odd_flags).is_err());
        assert!(Frame::decode(Bytes::from(odd_flags)).is_err());
        let off = Frame::Offset {
            route: 1,
            offset: 3,
        }
        .encode();
        assert_eq!(ok(&off), Ok(()));
        let mut long = off.to_vec();
        long.push(b'0');
        assert!(ok(&long).is_err());
        assert_eq!(
            Frame::decode(Bytes::from_static(b"P000000000000000100")),
            Err(FrameError::Short(19))
        );
    }

    #[test]
    fn header_is_readable_without_the_body() {
        let wire = Frame::data_from_slice(0xabc, &[0x1e; 10]);
        assert_eq!(
            peek(&wire).unwrap(),
            Header {
                kind: Kind::Data,
                route: 0xabc,
                value: 10,
                position: 0,
                limit: 0,
                flags: 0,
            }
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(
            Frame::decode(Bytes::from_static(b"D00")),
            Err(FrameError::Short(3))
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(b"X0000000000000001")),
            Err(FrameError::UnknownType(b'X'))
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(b"F000000000000000g")),
            Err(FrameError::BadHeader)
        );
        // Declared length disagrees with the body.
        let mut wire = Frame::data_from_slice(1, b"abc").to_vec();
        wire.push(b'd');
        assert!(Frame::decode(Bytes::from(wire)).is_err());
        // A bare separator or a dangling escape in the body.
        let mut wire = Frame::data_from_slice(1, b"ab").to_vec();
        wire[DATA_HEADER_LEN] = SEP;
        assert!(Frame::decode(Bytes::from(wire)).is_err());
        let mut wire = Frame::data_from_slice(1, b"a").to_vec();
        wire.truncate(DATA_HEADER_LEN);
        wire.extend_from_slice(&[ESC]);
        assert!(Frame::decode(Bytes::from(wire)).is_err());
    }
}
