//! Parts of `e2e_migrate`.

pub mod load;
