module github.com/pier-oci/pier/test

go 1.26
