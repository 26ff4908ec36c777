from pyti.cli import main

main()
