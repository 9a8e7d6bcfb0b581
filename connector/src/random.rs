//! Random bytes from the operating system, the one source every key, id,
//! token and nonce in the node comes from.

/// The system's random number generator failed; nothing secret can be made
/// until it works again.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed: {0}")]
pub struct RandomError(String);

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| RandomError(e.to_string()))?;
    Ok(out)
}

/// `n` random bytes as lowercase hex, for tokens shown to people.
pub fn hex(n: usize) -> Result<String, RandomError> {
    let mut out = vec![0u8; n];
    getrandom::fill(&mut out).map_err(|e| RandomError(e.to_string()))?;
    Ok(out.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_differ_between_calls_and_hex_has_the_right_length() {
        let a = super::bytes::<16>().unwrap();
        let b = super::bytes::<16>().unwrap();
        assert_ne!(a, b);
        let h = super::hex(32).unwrap();
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
