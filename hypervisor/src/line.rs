//! A cache line of its own for what one CPU writes often (off the other CPUs' lines).

#[repr(align(64))]
pub struct Line<T>(pub T);

impl<T> core::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
