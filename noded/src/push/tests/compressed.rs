//! Pushing with the archive layer zstd-compressed, or not, as asked and as measured.

use super::*;
use checkpointing::crd::Compression;
use checkpointing::digest::sha256_hex;
use compression::Layer;
use oci_spec::image::ImageConfiguration;

/// Bytes that compress to almost nothing, in several upload chunks.
fn compressible() -> Vec<u8> {
    (0..3u32 << 20).map(|i| (i / 4096) as u8).collect()
}

/// Bytes zstd cannot shrink.
fn incompressible() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn manifest_at(layout: &ImageLayout, desc: &Descriptor) -> ImageManifest {
    ImageManifest::from_file(layout.blob_path(desc.digest())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_push_sends_the_archive_compressed_under_its_own_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = compressible();
    let (layout, plain) = layout_with_image(tmp.path(), &archive, "content-uid");
    let before = manifest_at(&layout, &plain);

    let prepared = prepare(&layout, &plain, "content-uid", Compression::Zstd).unwrap();
    assert_eq!(prepared.layer, Layer::Zstd);
    assert_ne!(prepared.manifest.digest(), plain.digest());
    assert_eq!(prepared.archive, archive.len() as u64);
    assert!(prepared.sent * 10 < prepared.archive, "{prepared}");
    assert!(prepared.to_string().ends_with(" zstd"), "{prepared}");
    // The node's own image is the pushed one, whole and verified; nothing is left in ingest.
    assert_eq!(
        layout.resolve("content-uid").unwrap().unwrap().digest(),
        prepared.manifest.digest()
    );
    layout.verify("content-uid").unwrap();
    assert_eq!(std::fs::read_dir(layout.ingest_dir()).unwrap().count(), 0);

    let registry = fake::Registry::start().await;
    let to = destination(&registry, "ckpt/cc");
    let image = pusher(&registry)
        .push(&layout, &prepared.manifest, &to, "content-uid", None)
        .await
        .unwrap();
    assert_eq!(image, format!("{to}@{}", prepared.manifest.digest()));

    let state = registry.state.lock().unwrap();
    let (_, bytes) = &state.manifests["ckpt/cc:content-uid"];
    assert_eq!(
        format!("sha256:{}", sha256_hex(bytes)),
        prepared.manifest.digest().to_string()
    );
    let pushed = ImageManifest::from_reader(&bytes[..]).unwrap();
    let layer = &pushed.layers()[0];
    assert_eq!(layer.media_type(), &MediaType::ImageLayerZstd);
    assert_eq!(
        layer.media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let sent = &state.blobs[&layer.digest().to_string()];
    assert_eq!(sent.len() as u64, layer.size());
    assert_eq!(zstd::decode_all(&sent[..]).unwrap(), archive);
    // The config is the plain image's: its diff_id names the uncompressed archive.
    assert_eq!(pushed.config(), before.config());
    let config =
        ImageConfiguration::from_reader(&state.blobs[&pushed.config().digest().to_string()][..])
            .unwrap();
    assert_eq!(
        config.rootfs().diff_ids()[0],
        before.layers()[0].digest().to_string()
    );
    assert_eq!(pushed.annotations(), before.annotations());
}

#[test]
fn a_retried_push_keeps_the_compressed_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, plain) = layout_with_image(tmp.path(), &compressible(), "uid-1");
    let first = prepare(&layout, &plain, "uid-1", Compression::Zstd).unwrap();
    let again = prepare(&layout, &first.manifest, "uid-1", Compression::Auto).unwrap();
    assert_eq!(again.manifest, first.manifest);
    assert_eq!(again.layer, Layer::Zstd);
    assert_eq!(again.bytes, first.bytes);
}

#[test]
fn auto_compresses_only_what_pays_and_none_never() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, plain) = layout_with_image(tmp.path(), &incompressible(), "noise");
    let auto = prepare(&layout, &plain, "noise", Compression::Auto).unwrap();
    assert_eq!(auto.layer, Layer::Plain);
    assert_eq!(auto.manifest, plain);
    assert_eq!(auto.sent, auto.archive);
    assert_eq!(
        layout.resolve("noise").unwrap().unwrap().digest(),
        plain.digest()
    );

    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (layout, plain) = layout_with_image(&other, &compressible(), "pages");
    let none = prepare(&layout, &plain, "pages", Compression::None).unwrap();
    assert_eq!((none.layer, &none.manifest), (Layer::Plain, &plain));
    assert!(none.to_string().ends_with("uncompressed"), "{none}");
    let auto = prepare(&layout, &plain, "pages", Compression::Auto).unwrap();
    assert_eq!(auto.layer, Layer::Zstd);
    assert_ne!(auto.manifest, plain);
}
