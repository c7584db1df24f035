//! Number formatting shared by the text, Markdown and SVG renderings.

/// `1234567` → `"1,234,567"`.
pub(crate) fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds as microseconds with a precision that suits the magnitude:
/// `350` → `"0.35"`, `12_345_000` → `"12,345"`, `123_456` → `"123.5"`.
pub(crate) fn micros(ns: u64) -> String {
    let us = ns as f64 / 1_000.0;
    if us < 100.0 {
        format!("{us:.2}")
    } else if us < 10_000.0 {
        format!("{us:.1}")
    } else {
        group_thousands(us.round() as u64)
    }
}

/// A plain decimal for an axis tick: no trailing zeros, `k`/`M`/`G` suffixes for large values.
pub(crate) fn tick(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let mut s = format!("{scaled:.3}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s + suffix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn microseconds() {
        assert_eq!(micros(0), "0.00");
        assert_eq!(micros(350), "0.35");
        assert_eq!(micros(99_994), "99.99");
        assert_eq!(micros(123_456), "123.5");
        assert_eq!(micros(12_345_000), "12,345");
    }

    #[test]
    fn ticks() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(1_000.0), "1000");
        assert_eq!(tick(20_000.0), "20k");
        assert_eq!(tick(1_500_000.0), "1.5M");
        assert_eq!(tick(3e9), "3G");
    }
}
