metalk8s:
  roles:
    bootstrap: true
