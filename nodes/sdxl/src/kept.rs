//! What a sampling run makes once and reuses at every step: kept for the batch layout it was
//! made for, made again when a step comes with another.

use candle_core::Result;
use std::cell::RefCell;

/// A value kept with the layout `L` it was made for (start with an empty one).
#[derive(Debug)]
pub struct KeptForLayout<L, V> {
    kept: RefCell<Option<(L, V)>>,
}

impl<L, V> Default for KeptForLayout<L, V> {
    fn default() -> Self {
        Self {
            kept: RefCell::new(None),
        }
    }
}

impl<L: PartialEq, V: Clone> KeptForLayout<L, V> {
    /// The value for `layout`, made by `make` when another layout's or none is kept.
    ///
    /// # Errors
    /// Whatever `make` returns.
    pub fn get_or_make(&self, layout: L, make: impl FnOnce() -> Result<V>) -> Result<V> {
        if let Some((kept, value)) = self.kept.borrow().as_ref() {
            if *kept == layout {
                return Ok(value.clone());
            }
        }
        let value = make()?;
        *self.kept.borrow_mut() = Some((layout, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::KeptForLayout;
    use std::cell::Cell;

    #[test]
    fn a_value_is_made_once_per_layout_and_again_when_the_layout_changes() -> candle_core::Result<()> {
        let kept = KeptForLayout::default();
        let made = Cell::new(0);
        let make = |value: f32| {
            made.set(made.get() + 1);
            Ok(value)
        };
        let values = [
            kept.get_or_make((2, 8, 8), || make(1.0))?,
            kept.get_or_make((2, 8, 8), || make(2.0))?,
            kept.get_or_make((2, 8, 16), || make(3.0))?,
            kept.get_or_make((1, 8, 16), || make(4.0))?,
            kept.get_or_make((1, 8, 16), || make(5.0))?,
        ];
        assert_eq!(values, [1.0, 1.0, 3.0, 4.0, 4.0]);
        assert_eq!(made.get(), 3);
        let failing = KeptForLayout::<usize, f32>::default();
        assert!(failing.get_or_make(1, || candle_core::bail!("no value")).is_err());
        assert_eq!(
            failing.get_or_make(1, || make(6.0))?,
            6.0,
            "a failed make keeps nothing"
        );
        Ok(())
    }
}
