from stagewise.cli.main import main

main()
