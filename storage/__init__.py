"""Storage on any fsspec URI: `Store`, S3 options and the options rule, durable writes."""
from .store import (REFUSED, S3_ATTEMPTS, S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, SECRET_OPTIONS, STORAGE_RETRY_S,
                    StorageDown, StorageRefused, Store, cli_options, content_tag,
                    fsync_dir, makedirs_durable, options_for, parse_storage_options, read_bytes, s3_options,
                    transient, write_bytes_atomic, write_durable)

__all__ = ["REFUSED", "S3_ATTEMPTS", "S3_CONNECT_TIMEOUT", "S3_READ_TIMEOUT", "SECRET_OPTIONS", "STORAGE_RETRY_S",
           "StorageDown", "StorageRefused", "Store", "cli_options", "content_tag",
           "fsync_dir", "makedirs_durable", "options_for", "parse_storage_options", "read_bytes", "s3_options",
           "transient", "write_bytes_atomic", "write_durable"]
