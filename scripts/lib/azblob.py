#!/usr/bin/env python3
"""Helpers for the page blob benchmark, on the Python azure-storage-blob SDK
(the peer 'what users run today'), against Azurite's well-known account.

    azblob.py sas ENDPOINT CONTAINER              print a container SAS (1 h)
    azblob.py mkcontainer ENDPOINT CONTAINER
    azblob.py delete ENDPOINT CONTAINER PREFIX     delete blobs (and snapshots) by prefix
    azblob.py upload ENDPOINT CONTAINER BLOB FILE  upload FILE as a page blob (max_concurrency=16)
    azblob.py pages ENDPOINT CONTAINER BLOB FILE   a page blob of FILE's size holding only FILE's
                                                   data extents (SEEK_DATA/SEEK_HOLE), as a disk's
                                                   snapshot holds only its written pages
    azblob.py download ENDPOINT CONTAINER BLOB FILE  write the blob to FILE (exit 3 if it is missing)
    azblob.py blobsas ENDPOINT CONTAINER BLOB      print a read-only SAS for one blob (sr=b, sp=r),
                                                   the kind a managed snapshot's export URL carries
"""
import os
import datetime
import sys

from azure.storage.blob import (BlobSasPermissions, BlobServiceClient, ContainerSasPermissions,
                                generate_blob_sas, generate_container_sas)

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Azurite 3.35 serves up to this version; the SDK's default is newer.
API = "2025-11-05"


def service(endpoint):
    return BlobServiceClient(f"{endpoint}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY},
                             api_version=API)


def main():
    cmd, endpoint, container = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "sas":
        print(generate_container_sas(ACCOUNT, container, account_key=KEY,
                                     permission=ContainerSasPermissions(read=True, write=True, create=True,
                                                                        add=True, delete=True, list=True),
                                     expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)))
    elif cmd == "mkcontainer":
        try:
            service(endpoint).create_container(container)
        except Exception as e:  # already exists
            if "ContainerAlreadyExists" not in str(e):
                raise
    elif cmd == "delete":
        c = service(endpoint).get_container_client(container)
        for b in c.list_blobs(name_starts_with=sys.argv[4]):
            c.delete_blob(b.name, delete_snapshots="include")
    elif cmd == "download":
        blob, path = sys.argv[4], sys.argv[5]
        b = service(endpoint).get_container_client(container).get_blob_client(blob)
        if not b.exists():
            sys.exit(3)
        props = b.get_blob_properties()
        with open(path, "wb") as f:
            if str(props.blob_type).endswith("PageBlob"):
                # Only the written pages: the file stays sparse where the blob is.
                f.truncate(props.size)
                ranges, _ = b.get_page_ranges()
                for r in ranges:
                    for off in range(r["start"], r["end"] + 1, 32 << 20):
                        n = min(32 << 20, r["end"] + 1 - off)
                        f.seek(off)
                        f.write(b.download_blob(offset=off, length=n).readall())
            else:
                b.download_blob(max_concurrency=4).readinto(f)
    elif cmd == "upload":
        blob, path = sys.argv[4], sys.argv[5]
        c = service(endpoint).get_container_client(container)
        with open(path, "rb") as f:
            c.upload_blob(blob, f, blob_type="PageBlob", max_concurrency=16, overwrite=True)
    elif cmd == "pages":
        blob, path = sys.argv[4], sys.argv[5]
        client = service(endpoint).get_container_client(container).get_blob_client(blob)
        size = os.path.getsize(path)
        client.create_page_blob(size)
        with open(path, "rb") as f:
            fd, at = f.fileno(), 0
            while at < size:
                try:
                    start = os.lseek(fd, at, os.SEEK_DATA)
                except OSError:  # no data after `at`
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                # Page-aligned, at most 4 MiB per Put Page.
                start, end = start // 512 * 512, min(size, (end + 511) // 512 * 512)
                for off in range(start, end, 4 << 20):
                    n = min(4 << 20, end - off)
                    f.seek(off)
                    client.upload_page(f.read(n), offset=off, length=n)
                at = end
    elif cmd == "blobsas":
        blob = sys.argv[4]
        print(generate_blob_sas(ACCOUNT, container, blob, account_key=KEY, permission=BlobSasPermissions(read=True),
                                expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
