//! Segment compression. Pure functions, no I/O.
//!
//! Objects hold the plain compressed stream (a zstd frame, an LZ4 frame, or the raw
//! segment file), so they can be inspected with `zstd -d` / `lz4 -d`.

use std::io::{Read, Write};

pub use streamfabric_api::settings::Compression;

/// Compresses `data`. `zstd_level` applies to zstd only.
pub fn compress(data: &[u8], compression: Compression, zstd_level: i32) -> std::io::Result<Vec<u8>> {
    Compressor::new(compression, zstd_level)?.compress(data)
}

/// Compresses one piece after another (a segment's frames) with one zstd context: making a
/// context costs about as much as compressing a few kilobytes.
pub enum Compressor {
    Zstd { context: zstd::bulk::Compressor<'static>, level: i32 },
    Lz4,
    None,
}

impl Compressor {
    /// `zstd_level` applies to zstd only.
    pub fn new(compression: Compression, zstd_level: i32) -> std::io::Result<Compressor> {
        Ok(match compression {
            Compression::Zstd => {
                Compressor::Zstd { context: zstd::bulk::Compressor::new(zstd_level)?, level: zstd_level }
            }
            Compression::Lz4 => Compressor::Lz4,
            Compression::None => Compressor::None,
        })
    }

    pub fn compress(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compressor::Zstd { context, level } => context.compress(data).or_else(|_| {
                // compress sizes its buffer with compress_bound; fall back to the streaming
                // encoder should that ever fail.
                let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 2), *level)?;
                enc.write_all(data)?;
                enc.finish()
            }),
            Compressor::Lz4 => {
                let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
                enc.write_all(data)?;
                enc.finish().map_err(std::io::Error::other)
            }
            Compressor::None => Ok(data.to_vec()),
        }
    }
}

/// Decompresses `data`. `size_hint` (the raw size from the manifest) presizes the
/// output buffer.
pub fn decompress(data: &[u8], compression: Compression, size_hint: usize) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Zstd => {
            let mut out = Vec::with_capacity(size_hint);
            zstd::stream::Decoder::new(data)?.read_to_end(&mut out)?;
            Ok(out)
        }
        Compression::Lz4 => {
            let mut out = Vec::with_capacity(size_hint);
            lz4_flex::frame::FrameDecoder::new(data).read_to_end(&mut out)?;
            Ok(out)
        }
        Compression::None => Ok(data.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_compression() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let z = compress(&data, c, 3).unwrap();
            if c != Compression::None {
                assert!(z.len() < data.len() / 4, "{c} did not compress");
                assert_eq!(Compression::sniff(&z), Some(c));
            }
            assert_eq!(decompress(&z, c, data.len()).unwrap(), data);
        }
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let z = compress(&[], c, 3).unwrap();
            assert!(decompress(&z, c, 0).unwrap().is_empty());
        }
    }

    #[test]
    fn one_compressor_reused_gives_each_piece_alone() {
        let pieces: Vec<Vec<u8>> =
            (0..5u32).map(|p| (0..20_000u32).flat_map(|i| (i % (97 + p)).to_le_bytes()).collect()).collect();
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let mut compressor = Compressor::new(c, 1).unwrap();
            for piece in &pieces {
                let z = compressor.compress(piece).unwrap();
                assert_eq!(z, compress(piece, c, 1).unwrap(), "{c}: a reused context carries nothing over");
                assert_eq!(&decompress(&z, c, piece.len()).unwrap(), piece);
            }
        }
    }

    #[test]
    fn serde_names() {
        assert_eq!(serde_json::to_string(&Compression::Zstd).unwrap(), "\"zstd\"");
        assert_eq!(serde_json::to_string(&Compression::Lz4).unwrap(), "\"lz4\"");
        assert_eq!(serde_json::to_string(&Compression::None).unwrap(), "\"none\"");
        assert_eq!("LZ4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert!("gzip".parse::<Compression>().is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decompress(b"\x28\xB5\x2F\xFDnot really zstd", Compression::Zstd, 0).is_err());
        assert!(decompress(b"\x04\x22\x4D\x18nope", Compression::Lz4, 0).is_err());
    }
}
