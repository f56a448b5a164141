//! The BER forms `der` 0.8 refuses even under its `ber` rules: an OCTET STRING in the
//! constructed form with a definite length (Go's CMS encoder writes EnvelopedData content
//! that way: `[0]` constructed, holding OCTET STRING segments). Bounded: at most
//! [`MAX_DEPTH`] levels, never more output than input.

/// How deep constructed segments may nest.
const MAX_DEPTH: usize = 8;

/// One TLV: its identifier byte, whether it is constructed, its contents (children for an
/// indefinite length, without the end-of-contents), and what follows it. Single-byte tags
/// only (all this module reads).
fn read_tlv(input: &[u8], depth: usize) -> Option<(u8, &[u8], &[u8])> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    if first == 0x80 {
        // Indefinite: children until 00 00.
        if tag & 0x20 == 0 {
            return None;
        }
        let mut cursor = rest;
        loop {
            if cursor.starts_with(&[0, 0]) {
                let used = rest.len() - cursor.len();
                return Some((tag, &rest[..used], &cursor[2..]));
            }
            let (_, _, after) = read_tlv(cursor, depth + 1)?;
            cursor = after;
        }
    }
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        return (rest.len() - n >= len).then(|| (tag, &rest[n..n + len], &rest[n + len..]));
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The octets of an OCTET STRING's contents, primitive or constructed (segments concatenated).
pub(crate) fn octet_string_contents(constructed: bool, contents: &[u8]) -> Option<Vec<u8>> {
    fn walk(constructed: bool, contents: &[u8], depth: usize, out: &mut Vec<u8>) -> Option<()> {
        if !constructed {
            out.extend_from_slice(contents);
            return Some(());
        }
        let mut rest = contents;
        while !rest.is_empty() {
            let (tag, inner, after) = read_tlv(rest, depth + 1)?;
            if tag & 0xdf != 0x04 {
                return None;
            }
            walk(tag & 0x20 != 0, inner, depth + 1, out)?;
            rest = after;
        }
        Some(())
    }
    let mut out = Vec::with_capacity(contents.len());
    walk(constructed, contents, 0, &mut out)?;
    Some(out)
}

/// The octets of one whole OCTET STRING TLV (tag 0x04 or 0x24), nothing after it.
#[cfg(test)]
pub(crate) fn octet_string(tlv: &[u8]) -> Option<Vec<u8>> {
    let (tag, contents, rest) = read_tlv(tlv, 0)?;
    if tag & 0xdf != 0x04 || !rest.is_empty() {
        return None;
    }
    octet_string_contents(tag & 0x20 != 0, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitive_constructed_and_indefinite_forms() {
        assert_eq!(octet_string(&[0x04, 0x02, 1, 2]).unwrap(), [1, 2]);
        assert_eq!(
            octet_string(&[0x24, 0x08, 0x04, 0x02, 1, 2, 0x04, 0x02, 3, 4]).unwrap(),
            [1, 2, 3, 4]
        );
        assert_eq!(
            octet_string(&[0x24, 0x80, 0x04, 0x01, 9, 0x24, 0x80, 0x04, 0x01, 8, 0, 0, 0, 0])
                .unwrap(),
            [9, 8]
        );
        assert_eq!(
            octet_string(&[0x04, 0x81, 0x02, 5, 6]).unwrap(),
            [5, 6],
            "long-form length"
        );
    }

    #[test]
    fn malformed_forms_are_none() {
        for bad in [
            &[][..],
            &[0x04],
            &[0x04, 0x05, 1],
            &[0x02, 0x01, 1],
            &[0x04, 0x80, 0, 0],
            &[0x24, 0x80, 0x04, 0x01, 1],
            &[0x24, 0x03, 0x02, 0x01, 1],
            &[0x04, 0x85, 1, 1, 1, 1, 1],
            &[0x04, 0x01, 1, 0xff],
        ] {
            assert!(octet_string(bad).is_none(), "{bad:?}");
        }
        // Deep nesting stops, no stack overflow.
        let mut deep = vec![0x04, 0x00];
        for _ in 0..100 {
            let mut outer = vec![0x24, 0x80];
            outer.extend_from_slice(&deep);
            outer.extend_from_slice(&[0, 0]);
            deep = outer;
        }
        assert!(octet_string(&deep).is_none());
    }
}
