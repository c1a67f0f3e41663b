//! The i8042 (PS/2) keyboard, which most PC firmware also emulates for USB keyboards:
//! polled, its scancodes (set 1, as the controller translates them) decoded by
//! `pc-keyboard` with a US layout into the bytes a serial terminal would send (Enter `\r`,
//! Backspace DEL, `Ctrl-A` 0x01), which join COM1's input.

use crate::cpu::{inb, outb};
use pc_keyboard::{layouts::Us104Key, DecodedKey, HandleControl, PS2Keyboard as Keyboard, ScancodeSet1};
use spin::Mutex;

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
/// Status: output buffer full; the byte is from the auxiliary (mouse) port.
const OBF: u8 = 1;
const AUX: u8 = 1 << 5;

static KBD: Mutex<Option<Keyboard<Us104Key, ScancodeSet1>>> = Mutex::new(None);

/// Waits (bounded) until the controller takes a byte; false if it never did.
fn wait_input_empty() -> bool {
    (0..100_000).any(|_| inb(STATUS) & 0b10 == 0)
}

/// Takes the keyboard: the controller translates to scancode set 1 (the command byte's
/// bit 6, set by every firmware seen, set here if not) and stale bytes are dropped. A
/// machine without an i8042 (status reads all ones) gets no keyboard.
pub fn init() -> bool {
    if inb(STATUS) == 0xFF {
        return false;
    }
    for _ in 0..64 {
        if inb(STATUS) & OBF == 0 {
            break;
        }
        inb(DATA);
    }
    // Read the command byte (0x20), set translation, write it back (0x60).
    if wait_input_empty() {
        outb(STATUS, 0x20);
        if (0..100_000).any(|_| inb(STATUS) & OBF != 0) {
            let cmd = inb(DATA);
            if cmd & 0x40 == 0 && wait_input_empty() {
                outb(STATUS, 0x60);
                if wait_input_empty() {
                    outb(DATA, cmd | 0x40);
                }
            }
        }
    }
    *KBD.lock() = Some(Keyboard::new(ScancodeSet1::new(), Us104Key, HandleControl::MapLettersToUnicode));
    true
}

/// Has the keyboard (or the mouse, whose bytes are dropped) a byte waiting?
pub fn has_input() -> bool {
    inb(STATUS) & OBF != 0 && KBD.lock().is_some()
}

/// Decodes what the controller holds into `out`; returns the bytes written.
pub fn read_available(out: &mut [u8]) -> usize {
    let mut g = KBD.lock();
    let Some(kb) = g.as_mut() else { return 0 };
    let mut n = 0;
    for _ in 0..64 {
        let st = inb(STATUS);
        if st & OBF == 0 || n + 4 > out.len() {
            break;
        }
        let code = inb(DATA);
        if st & AUX != 0 {
            continue;
        }
        let Ok(Some(ev)) = kb.add_byte(code) else { continue };
        let bytes: &[u8] = match kb.process_keyevent(ev) {
            Some(DecodedKey::Unicode('\n')) => b"\r",
            Some(DecodedKey::Unicode('\u{8}')) => b"\x7f",
            Some(DecodedKey::Unicode(c)) if c.is_ascii() => {
                out[n] = c as u8;
                n += 1;
                continue;
            }
            Some(DecodedKey::RawKey(pc_keyboard::KeyCode::ArrowUp)) => b"\x1b[A",
            Some(DecodedKey::RawKey(pc_keyboard::KeyCode::ArrowDown)) => b"\x1b[B",
            Some(DecodedKey::RawKey(pc_keyboard::KeyCode::ArrowRight)) => b"\x1b[C",
            Some(DecodedKey::RawKey(pc_keyboard::KeyCode::ArrowLeft)) => b"\x1b[D",
            _ => continue,
        };
        out[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    }
    n
}
