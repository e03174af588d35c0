"""Reading image corpora in img2dataset's layout: listing input shards without opening
them, and input hygiene (every bad image skipped under its reason and counted)."""

from __future__ import annotations

import pytest

from pixperfect.corpus import (
    Hygiene,
    SkipTally,
    corpus_images,
    corpus_shards,
    integrity_error,
    is_corpus,
    shard_stem,
)
from pixperfect.corpus.synthetic import _jpeg, skimage_photos, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    write_corpus(
        out,
        skimage_photos(),
        shards=2,
        per_shard=6,
        defects=("truncated", "tiny", "png", "no_image"),
    )
    return out


def test_a_brace_pattern_of_a_hundred_thousand_shards_expands_without_opening_any():
    urls = corpus_shards("https://host.invalid/c/{00000..99999}.tar")
    assert len(urls) == 100_000 and urls[42] == "https://host.invalid/c/00042.tar"


def test_a_txt_list_names_shards_and_patterns_relative_to_itself(tmp_path):
    (tmp_path / "list.txt").write_text("# corpus\na/{0..1}.tar\n\n/abs/x.tar  # one more\n")
    assert corpus_shards(str(tmp_path / "list.txt")) == [
        str(tmp_path / "a/0.tar"),
        str(tmp_path / "a/1.tar"),
        "/abs/x.tar",
    ]


def test_folders_and_skimage_are_not_corpora_but_tars_and_lists_are(tmp_path):
    assert not is_corpus(str(tmp_path)) and not is_corpus("skimage")
    assert is_corpus("/d/{0..3}.tar") and is_corpus("s3://b/c/00001.tar")
    assert is_corpus("/d/list.txt") and is_corpus("pipe:curl -s http://h/{0..3}.tar")


def test_output_names_come_from_the_input_shard_name():
    assert shard_stem("/data/c/00042.tar") == "00042"
    assert shard_stem("https://h/c/00042.tar?sig=1") == "00042"
    assert shard_stem("pipe:curl -sf https://h/c/00007.tar") == "00007"


def test_a_jpeg_cut_before_its_end_marker_counts_as_truncated(corpus):
    good = _jpeg(skimage_photos()[0][:64, :64])
    assert integrity_error(good, "jpg") is None
    assert integrity_error(good[:-100], "jpg") == "truncated"
    assert integrity_error(b"not a jpeg", "jpg") == "undecodable"


def test_bad_samples_are_skipped_and_counted_by_reason_and_png_samples_are_read(corpus):
    tally = SkipTally()
    images = list(
        corpus_images(corpus_shards(f"{corpus}/{{00000..00001}}.tar"), Hygiene(min_side=128), tally)
    )
    assert tally.skipped == {"no_image": 1, "too_small": 1, "truncated": 1}
    assert len(images) == 12 - 3 and tally.counts["kept"] == 9
    assert [i.ext for i in images].count("png") == 1
    assert all(i.pixels.shape[2] == 3 and min(i.pixels.shape[:2]) >= 128 for i in images)
    assert images[0].url.endswith("00000.tar") and images[0].key


def test_small_images_are_kept_and_counted_when_upscaling_is_asked(corpus):
    tally = SkipTally()
    list(corpus_images([f"{corpus}/00000.tar"], Hygiene(min_side=128, small="upscale"), tally))
    assert tally.counts["upscaled"] == 1 and "too_small" not in tally.skipped


def test_exact_duplicates_are_skipped_only_when_asked(corpus):
    urls = [f"{corpus}/00001.tar"] * 2
    assert len(list(corpus_images(urls, Hygiene()))) == 12
    tally = SkipTally()
    assert len(list(corpus_images(urls, Hygiene(dedupe=True), tally))) == 6
    assert tally.skipped == {"duplicate": 6}


def test_a_missing_shard_is_counted_as_a_read_error_and_the_rest_is_read(corpus):
    tally = SkipTally()
    urls = [f"{corpus}/missing.tar", f"{corpus}/00001.tar"]
    assert len(list(corpus_images(urls, Hygiene(), tally))) == 6
    assert tally.skipped == {"read_error": 1}
