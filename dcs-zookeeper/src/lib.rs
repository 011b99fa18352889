//! ZooKeeper backend for the fullauto `Dcs` trait (see issue 6).
