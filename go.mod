module github.com/docker2vm/docker2vm

go 1.24.0
