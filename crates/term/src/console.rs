//! The `davit console` client's keys: the detach sequence.

/// `Ctrl-a`, then `q`: detach. `Ctrl-a Ctrl-a` sends one `Ctrl-a`.
const ESCAPE: u8 = 0x01;

/// Splits typed bytes into what goes to the container and whether the
/// escape sequence asked to detach; `armed` carries a trailing `Ctrl-a`
/// to the next read.
pub fn keys(input: &[u8], armed: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        if *armed {
            *armed = false;
            match b {
                b'q' | b'Q' => return (out, true),
                ESCAPE => out.push(ESCAPE),
                other => {
                    out.push(ESCAPE);
                    out.push(other);
                }
            }
        } else if b == ESCAPE {
            *armed = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::keys;

    #[test]
    fn ctrl_a_q_detaches_and_ctrl_a_ctrl_a_sends_one() {
        let mut armed = false;
        assert_eq!(keys(b"ls\r", &mut armed), (b"ls\r".to_vec(), false));
        assert_eq!(keys(b"x\x01", &mut armed), (b"x".to_vec(), false));
        assert!(armed, "a trailing Ctrl-a waits for the next key");
        assert_eq!(keys(b"q", &mut armed), (Vec::new(), true));
        let mut armed = false;
        assert_eq!(
            keys(b"\x01\x01a\x01b", &mut armed),
            (b"\x01a\x01b".to_vec(), false)
        );
        assert_eq!(keys(b"ab\x01qcd", &mut armed), (b"ab".to_vec(), true));
    }
}
