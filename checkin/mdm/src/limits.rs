//! Structural limits checked on the raw bytes before the plist parser runs.
//!
//! A parsed plist value is dropped, cloned and compared recursively, so a body nesting arrays
//! 100,000 deep (700 KB of `<array>`) overflows the stack and aborts the whole server — a
//! panic handler cannot catch that. A binary plist can also share one object between many
//! references, so a few hundred bytes can expand into billions of values. Both are rejected
//! here, cheaply, before any value is built. Real check-ins and command results nest a few
//! levels and hold at most thousands of values.
//!
//! The checks themselves cost memory bounded by the body: the binary walk counts every
//! reference when it is pushed (not when it is popped), so its stack never holds more than
//! `min(MAX_VALUES, body length)` entries — a body whose one array references itself a million
//! times is refused after its first million references are counted, not after a billion are
//! stacked.

use super::DecodeError;

/// Deepest nesting of arrays and dictionaries accepted.
pub const MAX_DEPTH: usize = 64;
/// Most values a plist may hold (a binary plist's shared references counted each time).
pub const MAX_VALUES: usize = 200_000;
/// Fewest body bytes per value: a parsed value costs up to ~220 bytes of heap (the value, its
/// share of its container's growth), so this keeps what a body can cost within about 32 times
/// its size. Real plists spend 15 to 50 bytes per value (XML) and at least 3 (binary: marker,
/// offset, reference).
pub(crate) const MIN_BYTES_PER_VALUE: usize = 8;

/// Values any body may hold, however short (a constant ~220 KB at most).
const MIN_BUDGET: usize = 1024;

/// Most values a body of `len` bytes may hold.
pub(crate) fn value_budget(len: usize) -> usize {
    MAX_VALUES.min((len / MIN_BYTES_PER_VALUE).max(MIN_BUDGET))
}

fn too_many(limit: usize, len: usize) -> DecodeError {
    too_complex(if limit == MAX_VALUES {
        format!("more than {MAX_VALUES} values")
    } else {
        format!(
            "more than {limit} values in {len} bytes (at most one per {MIN_BYTES_PER_VALUE} bytes)"
        )
    })
}

fn too_complex(detail: String) -> DecodeError {
    DecodeError::TooComplex { detail }
}

/// Checks an XML plist's nesting depth and how many elements it has. Over-approximates (a
/// `<dict` inside a comment counts), which only ever rejects exotic input.
pub(crate) fn check_xml(body: &[u8]) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut elements = 0usize;
    let limit = value_budget(body.len());
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|&b| b == b'<') {
        let tag = &body[i + off + 1..];
        i += off + 1;
        if !matches!(tag.first(), Some(b'/' | b'?' | b'!')) {
            elements += 1;
            if elements > limit {
                return Err(too_many(limit, body.len()));
            }
        }
        if tag.starts_with(b"/array") || tag.starts_with(b"/dict") {
            depth = depth.saturating_sub(1);
        } else if tag.starts_with(b"array") || tag.starts_with(b"dict") {
            let Some(end) = tag.iter().position(|&b| b == b'>') else {
                break; // Unterminated tag: the parser reports it.
            };
            let self_closing = end > 0 && tag[end - 1] == b'/';
            if !self_closing {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_complex(format!(
                        "arrays/dictionaries nested deeper than {MAX_DEPTH}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Walks a binary plist's object graph (without decoding values) and checks its depth and how
/// many values it expands into. Anything it cannot walk is rejected as not a plist.
pub(crate) fn check_binary(body: &[u8]) -> Result<(), DecodeError> {
    let bad = |detail: &str| DecodeError::NotAPlist {
        format: "binary",
        detail: detail.to_owned(),
    };
    if body.len() < 8 + 32 {
        return Err(bad("shorter than header and trailer"));
    }
    let trailer = &body[body.len() - 32..];
    let offset_size = usize::from(trailer[6]);
    let ref_size = usize::from(trailer[7]);
    let num_objects = be(&trailer[8..16]);
    let top = be(&trailer[16..24]);
    let table = be(&trailer[24..32]);
    if !(1..=8).contains(&offset_size) || !(1..=8).contains(&ref_size) {
        return Err(bad("invalid offset or reference size in trailer"));
    }
    if num_objects == 0 || num_objects > body.len() as u64 || top >= num_objects {
        return Err(bad("invalid object count or top object in trailer"));
    }
    let table_len = num_objects.saturating_mul(offset_size as u64);
    let table_end = table.saturating_add(table_len);
    if table < 8 || table_end > (body.len() - 32) as u64 {
        return Err(bad("offset table out of bounds"));
    }
    let (table, num_objects) = (table as usize, num_objects as usize);
    let offset_of = |obj: usize| -> Option<usize> {
        let start = table + obj * offset_size;
        usize::try_from(be(&body[start..start + offset_size])).ok()
    };
    // Every value counts once per reference to it, when the reference is pushed: the stack
    // never holds more than `limit` entries.
    let limit = value_budget(body.len());
    let mut values = 1usize;
    let mut stack = vec![(top as usize, 1usize)];
    while let Some((obj, depth)) = stack.pop() {
        if obj >= num_objects {
            return Err(bad("object reference out of range"));
        }
        let off = offset_of(obj).ok_or_else(|| bad("object offset out of range"))?;
        let marker = *body
            .get(off)
            .ok_or_else(|| bad("object offset out of range"))?;
        let refs_per_entry = match marker >> 4 {
            0xA..=0xC => 1, // array, ordered set, set
            0xD => 2,       // dictionary: keys then values
            _ => continue,  // scalars
        };
        let (count, refs_at) =
            container_len(body, off, marker).ok_or_else(|| bad("bad container length"))?;
        let n_refs = count
            .checked_mul(refs_per_entry)
            .filter(|n| n.saturating_mul(ref_size) <= body.len())
            .ok_or_else(|| bad("container larger than the body"))?;
        if n_refs == 0 {
            continue;
        }
        if depth + 1 > MAX_DEPTH {
            return Err(too_complex(format!(
                "arrays/dictionaries nested deeper than {MAX_DEPTH}"
            )));
        }
        values = values.saturating_add(n_refs);
        if values > limit {
            return Err(too_many(limit, body.len()));
        }
        for k in 0..n_refs {
            let at = refs_at + k * ref_size;
            let r = body
                .get(at..at + ref_size)
                .ok_or_else(|| bad("object reference out of bounds"))?;
            let r = usize::try_from(be(r)).map_err(|_| bad("object reference out of range"))?;
            stack.push((r, depth + 1));
        }
    }
    Ok(())
}

/// A container's entry count and where its references start.
fn container_len(body: &[u8], off: usize, marker: u8) -> Option<(usize, usize)> {
    let info = marker & 0x0F;
    if info != 0x0F {
        return Some((usize::from(info), off + 1));
    }
    let int_marker = *body.get(off + 1)?;
    if int_marker >> 4 != 0x1 {
        return None;
    }
    let width = 1usize << (int_marker & 0x0F);
    if width > 8 {
        return None;
    }
    let bytes = body.get(off + 2..off + 2 + width)?;
    Some((usize::try_from(be(bytes)).ok()?, off + 2 + width))
}

/// Big-endian unsigned integer of up to 8 bytes.
fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plist::Value;

    fn nested(depth: usize) -> Value {
        let mut v = Value::Array(vec![]);
        for _ in 1..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    fn bin(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        v.to_writer_binary(&mut out).unwrap();
        out
    }

    #[test]
    fn xml_depth_limit() {
        let ok = format!(
            "{}{}",
            "<array>".repeat(MAX_DEPTH),
            "</array>".repeat(MAX_DEPTH)
        );
        assert!(check_xml(ok.as_bytes()).is_ok());
        let many_siblings = "<array><dict/><array/></array>".repeat(10_000);
        assert!(check_xml(many_siblings.as_bytes()).is_ok());
        let deep = "<array>".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            check_xml(deep.as_bytes()),
            Err(DecodeError::TooComplex { .. })
        ));
        let deep_dicts = "<dict><key>k</key>".repeat(MAX_DEPTH + 1);
        assert!(check_xml(deep_dicts.as_bytes()).is_err());
    }

    #[test]
    fn binary_depth_limit() {
        assert!(check_binary(&bin(&nested(MAX_DEPTH))).is_ok());
        assert!(matches!(
            check_binary(&bin(&nested(MAX_DEPTH + 1))),
            Err(DecodeError::TooComplex { .. })
        ));
        let mut d = plist::Dictionary::new();
        d.insert("k".into(), nested(3));
        d.insert("s".into(), Value::String("x".into()));
        assert!(check_binary(&bin(&Value::Dictionary(d))).is_ok());
    }

    /// A hand-made binary plist where each array references the next one twice: 40 levels,
    /// 2^40 values once expanded.
    #[test]
    fn binary_shared_reference_bomb() {
        let levels = 40u8;
        let mut body = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..levels {
            offsets.push(body.len() as u8);
            if i + 1 == levels {
                body.push(0x08); // false
            } else {
                body.extend_from_slice(&[0xA2, i + 1, i + 1]);
            }
        }
        let table = body.len() as u64;
        body.extend_from_slice(&offsets);
        let mut trailer = vec![0u8; 6];
        trailer.push(1); // offset size
        trailer.push(1); // ref size
        trailer.extend_from_slice(&u64::from(levels).to_be_bytes());
        trailer.extend_from_slice(&0u64.to_be_bytes());
        trailer.extend_from_slice(&table.to_be_bytes());
        body.extend_from_slice(&trailer);
        let err = check_binary(&body).unwrap_err();
        assert!(matches!(err, DecodeError::TooComplex { .. }), "{err:?}");
    }

    #[test]
    fn a_self_referencing_array_is_refused_early() {
        for refs in [10, 1000, 1 << 20] {
            let body = magicpush_fixtures::plists::self_referencing_bplist(refs);
            let err = check_binary(&body).unwrap_err();
            assert!(
                matches!(err, DecodeError::TooComplex { .. }),
                "{refs}: {err:?}"
            );
        }
    }

    #[test]
    fn xml_element_count_limit() {
        let spaced = "<string>a value</string>"; // 24 bytes a value
        let ok = format!("<array>{}</array>", spaced.repeat(MAX_VALUES - 1));
        assert!(check_xml(ok.as_bytes()).is_ok());
        let many = format!("<array>{}</array>", spaced.repeat(MAX_VALUES + 1));
        assert!(matches!(
            check_xml(many.as_bytes()),
            Err(DecodeError::TooComplex { .. })
        ));
        // Dense: more values than one per 8 bytes.
        let dense = format!("<array>{}</array>", "<true/>".repeat(10_000));
        assert!(check_xml(dense.as_bytes()).is_err());
        let sparse = format!("<array>{}</array>", "<true/> \n".repeat(10_000));
        assert!(check_xml(sparse.as_bytes()).is_ok());
    }

    #[test]
    fn binary_garbage_is_rejected_not_panicking() {
        assert!(check_binary(b"bplist00").is_err());
        let mut b = bin(&nested(3));
        let n = b.len();
        b[n - 1] = 0xFF; // offset table offset out of range
        assert!(check_binary(&b).is_err());
        for end in 0..n {
            let _ = check_binary(&b[..end]);
        }
    }
}
