"""Storage on any fsspec URI: `Store`, S3 options and the options rule, the one storage failure."""
from .store import (REFUSED, S3_ATTEMPTS, S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, SECRET_OPTIONS, STORAGE_RETRY_S,
                    StorageError, StorageRefused, Store, cli_options, content_tag, options_for, parse_storage_options,
                    read_uri, s3_options, transient, write_uri)

__all__ = ["REFUSED", "S3_ATTEMPTS", "S3_CONNECT_TIMEOUT", "S3_READ_TIMEOUT", "SECRET_OPTIONS", "STORAGE_RETRY_S",
           "StorageError", "StorageRefused", "Store", "cli_options", "content_tag", "options_for",
           "parse_storage_options", "read_uri", "s3_options", "transient", "write_uri"]
