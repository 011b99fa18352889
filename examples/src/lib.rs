//! Examples of embedding the fullauto crates as a library.
