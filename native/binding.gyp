{
  "targets": [
    {
      "target_name": "dispatcher",
      "sources": ["dispatcher.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
