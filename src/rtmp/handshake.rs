//! The client side of the RTMP handshake, without I/O.
//!
//! ```text
//! client                         server
//!   C0 (version 3) + C1 (1536) ──▶
//!                             ◀── S0 (version 3) + S1 (1536) + S2 (1536)
//!   C2 = S1, byte for byte     ──▶
//! ```
//!
//! The "simple" handshake: C1 is our time, four zero bytes and random bytes. S1 is echoed as
//! C2 whatever its version field says and without looking for a digest (YouTube's S1 carries
//! a version and no digest; every server accepts the echo). S2 is not checked either, as
//! ffmpeg and OBS do not. C2 goes out as soon as S1 is complete.

/// Size of C1, S1, S2 (and C2).
pub const PACKET: usize = 1536;
pub const VERSION: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the server answered the RTMP handshake with version {0} (expected 3){hint}", hint = hint(*.0))]
    Version(u8),
}

/// What a first byte that is not an RTMP version probably means.
fn hint(byte: u8) -> &'static str {
    match byte {
        0x15 | 0x16 => "; it speaks TLS: use rtmps://",
        b'H' => "; it speaks HTTP",
        _ => "",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for S0 and S1.
    S0S1,
    /// C2 sent; waiting for the rest of S2.
    S2,
    Done,
}

pub struct Handshake {
    step: Step,
    /// S0 + S1 + S2 bytes received so far (at most 3073).
    got: Vec<u8>,
}

/// What [`Handshake::receive`] made of some bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    /// How many of the given bytes belonged to the handshake; the rest are chunk stream.
    pub consumed: usize,
    /// Bytes to send (C2), once S1 is complete.
    pub send: Option<Vec<u8>>,
    /// S2 is complete: the chunk stream starts after `consumed`.
    pub done: bool,
}

impl Handshake {
    /// A handshake and its first flight (C0 + C1). `time` goes into C1's time field;
    /// `random` fills the rest of C1 after four zero bytes.
    pub fn start(time: u32, random: &[u8; PACKET - 8]) -> (Handshake, Vec<u8>) {
        let mut c0c1 = Vec::with_capacity(1 + PACKET);
        c0c1.push(VERSION);
        c0c1.extend_from_slice(&time.to_be_bytes());
        c0c1.extend_from_slice(&[0; 4]);
        c0c1.extend_from_slice(random);
        let hs = Handshake {
            step: Step::S0S1,
            got: Vec::with_capacity(1 + 2 * PACKET),
        };
        (hs, c0c1)
    }

    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Takes bytes from the server.
    pub fn receive(&mut self, input: &[u8]) -> Result<Progress, HandshakeError> {
        let want = 1 + 2 * PACKET;
        let take = input.len().min(want - self.got.len());
        if self.step == Step::Done {
            return Ok(Progress {
                consumed: 0,
                send: None,
                done: true,
            });
        }
        if self.got.is_empty() && take > 0 && input[0] != VERSION {
            return Err(HandshakeError::Version(input[0]));
        }
        self.got.extend_from_slice(&input[..take]);
        let mut send = None;
        if self.step == Step::S0S1 && self.got.len() > PACKET {
            send = Some(self.got[1..1 + PACKET].to_vec());
            self.step = Step::S2;
        }
        if self.step == Step::S2 && self.got.len() == want {
            self.step = Step::Done;
            self.got = Vec::new();
        }
        Ok(Progress {
            consumed: take,
            send,
            done: self.step == Step::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_flight(s1_version: [u8; 4]) -> Vec<u8> {
        let mut s = vec![VERSION];
        let mut s1 = vec![0u8; PACKET];
        s1[4..8].copy_from_slice(&s1_version);
        for (i, b) in s1.iter_mut().enumerate().skip(8) {
            *b = (i * 7) as u8;
        }
        s.extend_from_slice(&s1);
        s.extend_from_slice(&[0xAB; PACKET]);
        s
    }

    #[test]
    fn c0_c1_layout() {
        let (_, c0c1) = Handshake::start(0x01020304, &[0x5A; PACKET - 8]);
        assert_eq!(c0c1.len(), 1 + PACKET);
        assert_eq!(&c0c1[..9], &[3, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert!(c0c1[9..].iter().all(|&b| b == 0x5A));
    }

    #[test]
    fn echoes_s1_with_a_version_and_leaves_trailing_bytes() {
        // A YouTube-like S1: non-zero version field, no digest.
        let mut flight = server_flight([4, 0, 0, 1]);
        flight.extend_from_slice(b"chunk stream");
        let (mut hs, _) = Handshake::start(0, &[0; PACKET - 8]);
        let p = hs.receive(&flight).unwrap();
        assert_eq!(p.consumed, 1 + 2 * PACKET);
        assert_eq!(p.send.as_deref(), Some(&flight[1..1 + PACKET]));
        assert!(p.done && hs.is_done());
        assert_eq!(&flight[p.consumed..], b"chunk stream");
    }

    #[test]
    fn byte_by_byte_sends_c2_once_after_s1() {
        let flight = server_flight([0; 4]);
        let (mut hs, _) = Handshake::start(0, &[0; PACKET - 8]);
        let mut c2 = Vec::new();
        for (i, b) in flight.iter().enumerate() {
            let p = hs.receive(std::slice::from_ref(b)).unwrap();
            assert_eq!(p.consumed, 1);
            if let Some(s) = p.send {
                assert_eq!(i, PACKET, "C2 right after the last byte of S1");
                c2.push(s);
            }
            assert_eq!(p.done, i == flight.len() - 1);
        }
        assert_eq!(c2, vec![flight[1..1 + PACKET].to_vec()]);
        let after = hs.receive(b"x").unwrap();
        assert_eq!(after.consumed, 0);
    }

    #[test]
    fn wrong_versions_are_errors_with_a_hint() {
        let (mut hs, _) = Handshake::start(0, &[0; PACKET - 8]);
        let err = hs.receive(&[0x16, 3, 1]).unwrap_err();
        assert_eq!(err, HandshakeError::Version(0x16));
        assert!(err.to_string().contains("rtmps://"), "{err}");
        let (mut hs, _) = Handshake::start(0, &[0; PACKET - 8]);
        assert!(hs
            .receive(b"HTTP/1.1 400")
            .unwrap_err()
            .to_string()
            .contains("HTTP"));
        let (mut hs, _) = Handshake::start(0, &[0; PACKET - 8]);
        assert_eq!(hs.receive(&[6]).unwrap_err(), HandshakeError::Version(6));
    }

    #[test]
    fn nothing_in_nothing_out() {
        let (mut hs, _) = Handshake::start(0, &[0; PACKET - 8]);
        let p = hs.receive(&[]).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 0,
                send: None,
                done: false
            }
        );
    }
}
