//! RFC 4180 CSV for the device export.

/// Appends one CSV record (CRLF-terminated) to `out`. Fields holding a comma, quote, CR or LF
/// are quoted with quotes doubled. A field a spreadsheet would run as a formula (first
/// character `=`, `+`, `-`, `@`, tab or CR) is prefixed with `'` so opening the export never
/// executes text a device sent (its name, for example).
pub fn write_record<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, field.as_ref());
    }
    out.push_str("\r\n");
}

fn write_field(out: &mut String, field: &str) {
    let defused = matches!(
        field.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    let needs_quotes = defused || field.contains([',', '"', '\r', '\n']);
    if !needs_quotes {
        out.push_str(field);
        return;
    }
    out.push('"');
    if defused {
        out.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let cases: &[(&[&str], &str)] = &[
            (&["a", "b"], "a,b\r\n"),
            (&["", ""], ",\r\n"),
            (&["a,b"], "\"a,b\"\r\n"),
            (&["say \"hi\""], "\"say \"\"hi\"\"\"\r\n"),
            (&["two\nlines"], "\"two\nlines\"\r\n"),
            (&["=1+1"], "\"'=1+1\"\r\n"),
            (&["@SUM(A1)"], "\"'@SUM(A1)\"\r\n"),
            (&["田中のiPhone"], "田中のiPhone\r\n"),
        ];
        for (fields, want) in cases {
            let mut out = String::new();
            write_record(&mut out, fields);
            assert_eq!(&out, want, "{fields:?}");
        }
    }
}
