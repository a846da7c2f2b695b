"""fitscope's Hydra launchers (Hydra finds launchers in the `hydra_plugins` namespace package):
`hydra/launcher=cpu` (`cpu_launcher.CpuLauncher`)."""
