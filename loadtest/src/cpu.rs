//! CPU time from /proc (Linux), so benchmarks can report cost per push, which a noisy shared
//! machine distorts far less than wall-clock rates. `None` where /proc is missing.

/// Clock ticks per second of /proc's time fields (USER_HZ: 100 on every Linux ABI in use).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) used so far by this process's threads whose name starts with
/// one of `prefixes`. A thread that ends while the list is read is skipped (its time is gone
/// with it), so the sum is `None` only where /proc itself cannot be read.
pub fn threads_cpu_s(prefixes: &[&str]) -> Option<f64> {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((name, fields)) = split_stat(&stat) else {
            continue;
        };
        if prefixes.iter().any(|p| name.starts_with(p)) {
            ticks += field(&fields, 14)? + field(&fields, 15)?;
        }
    }
    Some(ticks as f64 / TICKS)
}

/// CPU seconds used by this process's children that have been waited for.
pub fn children_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, fields) = split_stat(&stat)?;
    Some((field(&fields, 16)? + field(&fields, 17)?) as f64 / TICKS)
}

/// Splits `pid (comm) state …` into the command name and the fields after it, numbered as in
/// proc(5) (field 3 is the state).
fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = &stat[open + 1..close];
    let fields = stat[close + 1..].split_whitespace().collect();
    Some((name, fields))
}

fn field(fields: &[&str], number: usize) -> Option<u64> {
    fields.get(number - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let stat = "123 (engine (1)) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0";
        let (name, fields) = split_stat(stat).unwrap();
        assert_eq!(name, "engine (1)");
        assert_eq!(field(&fields, 14), Some(250));
        assert_eq!(field(&fields, 15), Some(50));
        assert_eq!(field(&fields, 16), Some(7));
        if cfg!(target_os = "linux") {
            assert!(threads_cpu_s(&[""]).is_some());
            assert!(children_cpu_s().is_some());
        }
    }
}
