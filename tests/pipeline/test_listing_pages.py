"""Listing an archive: an S3 prefix is read a page at a time (real S3 API, moto server), names
and signatures only, and the signatures are the ones earlier versions recorded (resume keeps
working across the change)."""
import os

import pytest

from helpers import encode, photo, write_tree

pytestmark = pytest.mark.fast


def test_s3_listing_goes_page_by_page_and_keeps_the_recorded_signatures(s3_endpoint):
    from pipeline.listing import input_signatures, scan_inputs
    from storage import Store
    s3, _, so = s3_endpoint
    s3.create_bucket(Bucket="archive")
    names = [f"roll{i // 10}/scan{i:03d}.jpg" for i in range(25)]
    for n in names:
        s3.put_object(Bucket="archive", Key=f"photos/{n}", Body=f"bytes of {n}".encode())
    s3.put_object(Bucket="archive", Key="photos/notes.txt", Body=b"not an image")
    s3.put_object(Bucket="archive", Key="photos/roll9/", Body=b"")               # a folder marker
    s3.put_object(Bucket="archive", Key="photos/.thumbs/x.jpg", Body=b"hidden")
    s3.put_object(Bucket="archive", Key="other/elsewhere.jpg", Body=b"outside the prefix")
    store = Store("s3://archive/photos", so)

    pages = []
    real = store.fs.call_s3

    def counting(method, *args, **kw):
        if method == "list_objects_v2":
            pages.append(kw.get("ContinuationToken"))
        return real(method, *args, **kw)
    store.fs.call_s3 = counting
    listed = list(store.walk(page_size=10))
    assert len(pages) == 3 and pages[0] is None        # 28 objects, 10 a page
    assert sorted(r for r, _ in listed) == sorted(names + ["notes.txt", ".thumbs/x.jpg"])

    inputs, skipped, sigs = scan_inputs(store)
    assert inputs == sorted(names)
    assert skipped == [(".thumbs/x.jpg", "hidden name: not read")]
    # the same signatures as one object's own info (size and ETag), as recorded before
    assert sigs == input_signatures(store, names)
    assert sigs[names[0]].startswith(f"{len(('bytes of ' + names[0]).encode())}:")
    # nothing of the listing is kept by s3fs
    assert not store.fs.dircache


def test_local_listing_signs_each_input_from_the_walk(tmp_path):
    from pipeline.listing import input_signatures, scan_inputs
    from storage import Store
    write_tree(tmp_path / "in", {"a.png": encode(photo(8, 8)), "sub/b.jpg": encode(photo(8, 8), "JPEG"),
                                 "c.txt": b"no"})
    inputs, skipped, sigs = scan_inputs(Store(str(tmp_path / "in")))
    assert inputs == ["a.png", "sub/b.jpg"] and skipped == []
    assert sigs == input_signatures(Store(str(tmp_path / "in")), inputs)
    st = os.stat(tmp_path / "in" / "a.png")
    assert sigs["a.png"] == f"{st.st_size}:{st.st_mtime_ns}"


def test_an_objects_tag_is_its_etag_whatever_the_store_calls_it():
    from storage import content_tag
    assert content_tag({"size": 3, "ETag": '"abc"', "mtime": 9}) == "3:abc"      # S3
    assert content_tag({"size": 3, "etag": "CJ7x", "mtime": 9}) == "3:CJ7x"      # GCS, Azure
    assert content_tag({"size": 3, "mtime": 9}) == "3:9"                          # no tag at all
