//! What a video frame's own bitstream says, for Enhanced RTMP frames whose tag header does not
//! (MediaMTX 1.21 writes every Enhanced RTMP frame with frame type 0, "reserved"): whether it
//! starts a GOP. Read without decoding: NAL unit types (H.264, HEVC), OBU types (AV1), the
//! uncompressed header's first bits (VP9). Every length is checked against the payload.

/// Whether the coded frame `data` (the bytes after the FourCC, composition time included
/// where the packet has one) is a keyframe of codec `fourcc`.
pub fn is_keyframe(fourcc: &[u8; 4], packet_type: u8, data: &[u8]) -> bool {
    // CodedFrames (1) of AVC and HEVC carry a 24-bit composition time first; CodedFramesX (3)
    // and the other codecs do not.
    let with_ct = packet_type == 1 && matches!(fourcc, b"avc1" | b"hvc1");
    let data = if with_ct {
        data.get(3..).unwrap_or_default()
    } else {
        data
    };
    match fourcc {
        b"avc1" => nal_units(data).any(|n| n.first().is_some_and(|b| b & 0x1F == 5)),
        // IRAP pictures: BLA, IDR, CRA (types 16-23).
        b"hvc1" => nal_units(data).any(|n| {
            n.first()
                .is_some_and(|b| (16..=23).contains(&((b >> 1) & 0x3F)))
        }),
        b"av01" => av1_has_sequence_header(data),
        b"vp09" => vp9_is_keyframe(data),
        _ => false,
    }
}

/// NAL units with 4-byte big-endian lengths (what every RTMP muxer writes); stops at the first
/// length that does not fit.
fn nal_units(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let unit = data.get(4..4 + len)?;
        data = &data[4 + len..];
        Some(unit)
    })
}

/// AV1 encoders repeat the sequence header OBU (type 1) at every keyframe, and a decoder can
/// only start there.
fn av1_has_sequence_header(mut data: &[u8]) -> bool {
    // Bounded: each OBU takes at least one byte.
    while let Some(&header) = data.first() {
        let obu_type = (header >> 3) & 0x0F;
        if obu_type == 1 {
            return true;
        }
        let extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut at = 1 + usize::from(extension);
        if !has_size {
            return false; // the OBU runs to the end
        }
        let Some((size, used)) = leb128(data.get(at..).unwrap_or_default()) else {
            return false;
        };
        at += used;
        match at.checked_add(size).and_then(|end| data.get(end..)) {
            Some(rest) => data = rest,
            None => return false,
        }
    }
    false
}

/// An AV1 leb128 value and the bytes it took (at most 8).
pub(super) fn leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// VP9's uncompressed header: frame_marker (2), profile (2, plus a reserved bit in profile 3),
/// show_existing_frame (1), frame_type (1, 0 = KEY_FRAME).
fn vp9_is_keyframe(data: &[u8]) -> bool {
    let Some(&b) = data.first() else {
        return false;
    };
    if b >> 6 != 0b10 {
        return false;
    }
    let profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1);
    let mut bit = 4; // next bit, counted from the top of `b` (7 - 3 used)
    if profile == 3 {
        bit -= 1;
    }
    let show_existing = (b >> (bit - 1)) & 1;
    if show_existing == 1 {
        return false;
    }
    (b >> (bit - 2)) & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nals(units: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for u in units {
            out.extend_from_slice(&(u.len() as u32).to_be_bytes());
            out.extend_from_slice(u);
        }
        out
    }

    #[test]
    fn hevc_and_avc_keyframes_are_found_by_nal_type() {
        // HEVC: a prefix SEI (39), then an IDR_W_RADL (19); composition time first.
        let mut idr = vec![0, 0, 0];
        idr.extend(nals(&[&[39 << 1, 1, 5], &[19 << 1, 1, 0xAF]]));
        assert!(is_keyframe(b"hvc1", 1, &idr));
        // TRAIL_R (1): not a keyframe; CodedFramesX has no composition time.
        assert!(!is_keyframe(b"hvc1", 3, &nals(&[&[1 << 1, 1, 0xD0]])));
        assert!(is_keyframe(b"hvc1", 3, &nals(&[&[21 << 1, 1]])));
        // AVC: IDR is type 5; type 1 is a slice.
        let mut avc = vec![0, 0, 0];
        avc.extend(nals(&[&[0x06, 5], &[0x65, 0x88]]));
        assert!(is_keyframe(b"avc1", 1, &avc));
        assert!(!is_keyframe(b"avc1", 3, &nals(&[&[0x41, 0x9A]])));
        // Lengths that do not fit: not a keyframe, no panic.
        assert!(!is_keyframe(b"hvc1", 3, &[0xFF, 0xFF, 0xFF, 0xFF, 19 << 1]));
        assert!(!is_keyframe(b"hvc1", 1, &[0]));
    }

    #[test]
    fn av1_keyframes_carry_a_sequence_header() {
        // Temporal delimiter (2, size 0), sequence header (1, size 2).
        assert!(is_keyframe(b"av01", 1, &[0x12, 0x00, 0x0A, 0x02, 0, 0]));
        // Temporal delimiter, then a frame OBU (6).
        assert!(!is_keyframe(b"av01", 1, &[0x12, 0x00, 0x32, 0x01, 0x10]));
        // A size past the end, a runaway leb128: no panic.
        assert!(!is_keyframe(b"av01", 1, &[0x32, 0x7F, 0x10]));
        assert!(!is_keyframe(
            b"av01",
            1,
            &[0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        ));
    }

    #[test]
    fn vp9_frame_type_is_read_from_the_header() {
        // frame_marker 10, profile 0, show_existing 0, frame_type 0 (key).
        assert!(is_keyframe(b"vp09", 1, &[0b1000_0000]));
        // frame_type 1: inter.
        assert!(!is_keyframe(b"vp09", 1, &[0b1000_0100]));
        // show_existing_frame: not a keyframe.
        assert!(!is_keyframe(b"vp09", 1, &[0b1000_1000]));
        // Profile 3 (reserved bit), key.
        assert!(is_keyframe(b"vp09", 1, &[0b1011_0000]));
        assert!(!is_keyframe(b"vp09", 1, &[]));
        assert!(!is_keyframe(b"Opus", 1, &[0x80]));
    }
}
