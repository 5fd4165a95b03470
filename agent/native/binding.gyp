{
  "targets": [
    {
      "target_name": "times",
      "sources": ["times.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
