{
  "targets": [
    {
      "target_name": "dispatcher",
      "sources": ["napi_helpers.c", "address.c", "listen.c", "fdpass.c", "watch.c", "udp.c", "relay.c", "steer.c", "notify.c", "init.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
