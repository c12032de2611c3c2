from tap_backstory.tap import main

main()
